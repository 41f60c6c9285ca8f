//! `herd user add`: a dashboard login with an argon2id password hash.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use herd_core::config::web::{user_name_ok, WebRole};
use herd_core::config::Config;

use super::exit;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Make a login for the dashboard and HTTP API: asks for the password (twice, on a
    /// terminal; else one line from stdin), hashes it with argon2id, and prints the
    /// `[web.user.NAME]` table, or appends it to --config (then `herd reload` applies it)
    Add(AddArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The login name (letters, digits, '.', '_', '-', '@')
    name: String,
    /// admin (every action) or read-only (look, never touch)
    #[arg(long, default_value = "read-only", value_parser = ["admin", "read-only"])]
    role: String,
    /// Append the user to this config file (checked before and after; the file is replaced
    /// atomically)
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Read the password from the first line of stdin, even on a terminal
    #[arg(long)]
    password_stdin: bool,
}

pub fn run(c: Cmd) -> u8 {
    match c {
        Cmd::Add(a) => match add(a) {
            Ok(()) => exit::OK,
            Err(code) => code,
        },
    }
}

fn add(a: AddArgs) -> Result<(), u8> {
    if !user_name_ok(&a.name) {
        eprintln!(
            "herd: {:?} is not a user name (1 to 64 letters, digits, '.', '_', '-' or '@')",
            a.name
        );
        return Err(exit::USAGE);
    }
    let role = if a.role == "admin" {
        WebRole::Admin
    } else {
        WebRole::ReadOnly
    };
    // Before asking for a password: the file must be there, valid, and without that user.
    let original = match &a.config {
        Some(path) => {
            // Read once: checked here, appended to below.
            let text = std::fs::read_to_string(path).map_err(|e| {
                eprintln!("herd: cannot read {}: {e}", path.display());
                exit::CONFIG
            })?;
            let cfg = Config::parse(&path.display().to_string(), &text).map_err(|e| {
                eprintln!("{e}");
                exit::CONFIG
            })?;
            if cfg
                .web
                .iter()
                .flat_map(|w| &w.users)
                .any(|u| u.name == a.name)
            {
                eprintln!(
                    "herd: {} already has a user {:?} (edit or remove its [web.user.{}] table)",
                    path.display(),
                    a.name,
                    a.name
                );
                return Err(exit::DATAERR);
            }
            Some((text, cfg.web.is_some()))
        }
        None => None,
    };
    let password = read_password(a.password_stdin)?;
    if password.chars().count() < 8 {
        eprintln!("herd: the password is too short (at least 8 characters)");
        return Err(exit::DATAERR);
    }
    let hash = herd_web::auth::hash_password(&password).map_err(|e| {
        eprintln!("herd: {e}");
        exit::SOFTWARE
    })?;
    let table = format!(
        "[web.user.{}]\npassword = \"{hash}\"\nrole = \"{role}\"\n",
        toml_key(&a.name)
    );
    let (Some(path), Some((mut text, had_web))) = (a.config, original) else {
        print!("{table}");
        return Ok(());
    };
    // The file itself, not a symlink to it (the rename replaces what it names).
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&table);
    // The result must still be a valid config before it replaces the file.
    if let Err(e) = Config::parse(&path.display().to_string(), &text) {
        eprintln!("herd: the config would not be valid with the new user:\n{e}");
        return Err(exit::CONFIG);
    }
    // Created with the file's own mode (the hashes never sit in a wider-open file).
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&path).map_or(0o600, |m| m.permissions().mode() & 0o7777)
    };
    let res = super::write_atomic(&path, text.as_bytes(), mode);
    if let Err(e) = res {
        eprintln!("herd: cannot write {}: {e}", path.display());
        return Err(exit::CANTCREAT);
    }
    eprintln!(
        "added {} user {:?} to {}; {}",
        role,
        a.name,
        path.display(),
        if had_web {
            "`herd reload` applies it"
        } else {
            "the daemon serves the dashboard after a restart (the file had no [web] yet)"
        }
    );
    Ok(())
}

/// A bare TOML key when it can be one, else a quoted one.
fn toml_key(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        format!("\"{name}\"")
    }
}

fn read_password(from_stdin: bool) -> Result<String, u8> {
    let stdin = std::io::stdin();
    if from_stdin || !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map_err(|e| {
            eprintln!("herd: cannot read the password: {e}");
            exit::DATAERR
        })?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let first = prompt("Password: ")?;
    let second = prompt("Again: ")?;
    if first != second {
        eprintln!("herd: the passwords differ");
        return Err(exit::DATAERR);
    }
    Ok(first)
}

/// Reads a line from the terminal with echo off (restored afterwards, even on error).
fn prompt(text: &str) -> Result<String, u8> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        let _ = tcsetattr(&stdin, OptionalActions::Now, &quiet);
    }
    let mut line = String::new();
    let res = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, OptionalActions::Now, t);
    }
    eprintln!();
    res.map_err(|e| {
        eprintln!("herd: cannot read the password: {e}");
        exit::DATAERR
    })?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
