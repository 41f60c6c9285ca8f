//! A config file's problems, each naming file, line and key, and the line map that finds the
//! line of a key from its byte span.

use std::fmt;

use toml::Spanned;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}: {}", self.file, line, self.key, self.reason),
            None => write!(f, "{}: {}: {}", self.file, self.key, self.reason),
        }
    }
}

/// All problems found in a config file; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Maps byte offsets of the source to 1-based line numbers.
pub(super) struct Lines<'a> {
    pub(super) src: &'a str,
    pub(super) file: &'a str,
}

impl Lines<'_> {
    pub(super) fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.src.len());
        self.src.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    pub(super) fn err<T>(
        &self,
        span: Option<&Spanned<T>>,
        key: impl Into<String>,
        reason: impl fmt::Display,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: span.map(|s| self.line(s.span().start)),
            key: key.into(),
            reason: reason.to_string(),
        }
    }

    /// Parses every item of a list of strings with `parse`; each item it refuses is an error
    /// at the list's line, with `parse`'s reason.
    pub(super) fn each<T, E: fmt::Display>(
        &self,
        list: &Spanned<Vec<String>>,
        key: &str,
        errs: &mut Vec<ConfigError>,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(list.get_ref().len());
        for item in list.get_ref() {
            match parse(item) {
                Ok(v) => out.push(v),
                Err(why) => errs.push(self.err(Some(list), key, why)),
            }
        }
        out
    }
}
