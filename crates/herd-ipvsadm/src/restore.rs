//! `ipvsadm -R`: commands from standard input, one per line.

use std::fmt;

use super::parse::parse_args_with;
use super::resolve::{NumericOnly, Resolver};
use super::{Command, UsageError};

/// A line of `-R` input that ipvsadm would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreError {
    /// 1-based line number.
    pub line: usize,
    /// The line as read.
    pub text: String,
    /// ipvsadm's message and exit code for it (it prints only `error`).
    pub error: UsageError,
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.error)
    }
}

impl std::error::Error for RestoreError {}

/// Reads `-R` input with numeric addresses only; see [`parse_restore_with`].
pub fn parse_restore(text: &str) -> Result<Vec<Command>, RestoreError> {
    parse_restore_with(text, &NumericOnly)
}

/// Reads `-R` input: what `-S` prints, and any ipvsadm command line without the program name,
/// one per line, arguments separated by blanks. As with ipvsadm, blank lines are skipped, a
/// word `ipvsadm` anywhere is ignored, and `-R` inside is refused. Beyond ipvsadm (whose
/// `ipvsadm-restore` script drops lines starting with `#`), a word starting with `#` begins a
/// comment that runs to the end of the line.
///
/// All or nothing: the first bad line is the error. ipvsadm itself applies the lines before
/// it; [`parse_restore_partial`] gives those too.
pub fn parse_restore_with(
    text: &str,
    resolver: &dyn Resolver,
) -> Result<Vec<Command>, RestoreError> {
    match parse_restore_partial(text, resolver) {
        (cmds, None) => Ok(cmds),
        (_, Some(e)) => Err(e),
    }
}

/// Reads `-R` input up to the first bad line: the commands before it, and its error if any.
pub fn parse_restore_partial(
    text: &str,
    resolver: &dyn Resolver,
) -> (Vec<Command>, Option<RestoreError>) {
    let mut cmds = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let mut words: Vec<String> = Vec::new();
        for w in line.split([' ', '\t', '\r']).filter(|w| !w.is_empty()) {
            if w.starts_with('#') {
                break;
            }
            if w != "ipvsadm" {
                words.push(w.to_string());
            }
        }
        if words.is_empty() {
            continue;
        }
        let fail = |error: UsageError| RestoreError {
            line: i + 1,
            text: line.trim_end_matches('\r').to_string(),
            error,
        };
        match parse_args_with(&words, resolver) {
            Ok(Command::Restore) => return (cmds, Some(fail(UsageError::try_help()))),
            Ok(cmd) => cmds.push(cmd),
            Err(e) => return (cmds, Some(fail(e))),
        }
    }
    (cmds, None)
}
