//! `herd ipvsadm`: ipvsadm's command line, messages and exit codes, against the daemon.

use std::io::Read;
use std::path::PathBuf;

use herd_core::api::{Request, Response};
use herd_ipvsadm::{
    api_error_report, format_connections, format_daemon, format_list, format_save, format_timeouts,
    help_text, parse_args_with, parse_restore_partial, unreachable_message, version_text, Command,
    HostTables, ListView,
};

use crate::client::Client;

/// Takes `--socket PATH` / `--socket=PATH` out of the arguments: the demo prints commands in
/// that form, and ipvsadm itself has no such option.
fn strip_socket(args: Vec<String>, mut socket: Option<PathBuf>) -> (Vec<String>, Option<PathBuf>) {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--socket" {
            if let Some(p) = it.next() {
                socket = Some(PathBuf::from(p));
            }
        } else if let Some(p) = a.strip_prefix("--socket=") {
            socket = Some(PathBuf::from(p));
        } else {
            out.push(a);
        }
    }
    (out, socket)
}

/// Names come from /etc/services and /etc/hosts only: never a DNS query.
fn resolver() -> HostTables {
    let mut t = HostTables::new();
    if let Ok(s) = std::fs::read_to_string("/etc/services") {
        t.add_services(&s);
    }
    if let Ok(h) = std::fs::read_to_string("/etc/hosts") {
        t.add_hosts(&h);
    }
    t
}

fn code(c: i32) -> u8 {
    u8::try_from(c & 0xff).unwrap_or(255)
}

pub fn run(args: Vec<String>, socket: Option<PathBuf>) -> u8 {
    let (args, socket) = strip_socket(args, socket);
    let names = resolver();
    let cmd = match parse_args_with(&args, &names) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", e.message);
            return code(e.exit_code());
        }
    };
    match cmd {
        Command::Help => {
            print!("{}", help_text());
            return 0;
        }
        Command::Version => {
            print!("{}", version_text());
            return 0;
        }
        _ => {}
    }
    let path = super::socket_path(socket);
    let mut client = match Client::connect(&path) {
        Ok(c) => c,
        Err(e) => {
            let (msg, c) = unreachable_message(&e.to_string());
            eprintln!("{msg}");
            return code(c);
        }
    };
    if cmd == Command::Restore {
        return restore(&mut client, &names);
    }
    code(execute(&mut client, &cmd, &names))
}

/// `-R`: one command per line of standard input. As ipvsadm, a line that does not parse stops
/// the restore; a line the daemon refuses is reported and the rest goes on; the exit status is
/// that of the last line.
fn restore(client: &mut Client, names: &HostTables) -> u8 {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("herd ipvsadm: cannot read standard input: {e}");
        return 2;
    }
    let (cmds, err) = parse_restore_partial(&text, names);
    let mut last = 0;
    for c in &cmds {
        last = execute(client, c, names);
    }
    if let Some(e) = err {
        eprintln!("{}", e.error.message);
        return code(e.error.exit_code());
    }
    code(last)
}

/// Runs one command; prints its output or ipvsadm's error message; returns the exit status.
fn execute(client: &mut Client, cmd: &Command, names: &HostTables) -> i32 {
    let req = match cmd {
        Command::List(opts) => match opts.view() {
            ListView::Connections => Request::Connections,
            ListView::Services => Request::List {
                service: opts.service,
            },
            ListView::Timeout => Request::GetTimeouts,
            ListView::Daemon => {
                print!("{}", format_daemon());
                return 0;
            }
        },
        Command::Save { .. } => Request::List { service: None },
        Command::AddService(s) => Request::AddService { service: s.clone() },
        // ipvsadm cannot express herd's own service fields: the daemon keeps them as they are.
        Command::EditService(s) => Request::EditService {
            service: herd_core::api::ServiceEdit {
                name: None,
                proxy_protocol: None,
                ..herd_core::api::ServiceEdit::replacing(s.clone())
            },
        },
        Command::DeleteService(k) => Request::DeleteService { service: *k },
        Command::Clear => Request::Clear,
        Command::AddReal { service, real } => Request::AddReal {
            service: *service,
            real: *real,
        },
        Command::EditReal { service, real } => Request::EditReal {
            service: *service,
            real: herd_core::api::RealEdit::replacing(*real),
        },
        Command::DeleteReal { service, address } => Request::DeleteReal {
            service: *service,
            address: *address,
        },
        Command::Zero { service } => Request::Zero { service: *service },
        Command::SetTimeouts(t) => Request::SetTimeouts { timeouts: *t },
        Command::Help | Command::Version | Command::Restore => return 0,
    };
    let resp = match client.call(&req) {
        Ok(r) => r,
        Err(e) => {
            let (msg, c) = unreachable_message(&e.to_string());
            eprintln!("{msg}");
            return c;
        }
    };
    match (cmd, resp) {
        (_, Response::Error(e)) => {
            let (msg, c) = api_error_report(&e, cmd);
            eprintln!("{msg}");
            c
        }
        (Command::List(opts), Response::Services { services }) => {
            print!("{}", format_list(&services, opts, names));
            0
        }
        (Command::List(opts), Response::Connections { connections }) => {
            print!("{}", format_connections(&connections, opts, names));
            0
        }
        (Command::List(_), Response::Timeouts { timeouts }) => {
            print!("{}", format_timeouts(&timeouts));
            0
        }
        (Command::Save { numeric }, Response::Services { services }) => {
            print!("{}", format_save(&services, *numeric, names));
            0
        }
        (_, Response::Ok) => 0,
        (_, other) => {
            eprintln!("herd ipvsadm: unexpected answer from the daemon: {other:?}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_option_is_taken_out_anywhere() {
        let args: Vec<String> = ["-L", "-n", "--socket", "/tmp/s", "--stats"]
            .map(String::from)
            .to_vec();
        let (rest, sock) = strip_socket(args, None);
        assert_eq!(rest, vec!["-L", "-n", "--stats"]);
        assert_eq!(sock, Some(PathBuf::from("/tmp/s")));
        let (rest, sock) = strip_socket(vec!["--socket=/x".into(), "-C".into()], Some("/y".into()));
        assert_eq!(rest, vec!["-C"]);
        assert_eq!(sock, Some(PathBuf::from("/x")));
    }
}
