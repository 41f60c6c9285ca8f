//! `herd config validate`.

use std::path::PathBuf;

use herd_core::config::Config;

use super::exit;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Check config files; prints `file:line: key: reason` for every problem
    ///
    /// Beyond the config's own rules, checks what the daemon needs from this host to start
    /// with it: the agent's certificates load, its user exists, VRRP interfaces are there, the
    /// dashboard's certificate loads, files it reads are readable and logs can be written.
    /// Exit code 78 for any problem.
    Validate {
        /// Config files to check
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Check only the config itself, not this host (a config written for another node)
        #[arg(long)]
        config_only: bool,
    },
}

pub fn run(cmd: Cmd) -> u8 {
    match cmd {
        Cmd::Validate { files, config_only } => {
            let mut code = exit::OK;
            for f in files {
                match Config::load(&f) {
                    Ok(c) => {
                        // Parsed: now what the daemon would need from this host to start.
                        let problems = if config_only {
                            Vec::new()
                        } else {
                            crate::preflight::check(&c)
                        };
                        if !problems.is_empty() {
                            for p in problems {
                                eprintln!("{}: {p}", f.display());
                            }
                            code = exit::CONFIG;
                            continue;
                        }
                        let reals: usize = c.lb.services.iter().map(|s| s.reals.len()).sum();
                        let checks = c.health.checks.len();
                        let count = |n: usize, one: &str, many: &str| match n {
                            0 => String::new(),
                            1 => format!(", 1 {one}"),
                            n => format!(", {n} {many}"),
                        };
                        let web = match &c.web {
                            Some(w) => format!(
                                ", dashboard on {} with {} login{}",
                                w.listen,
                                w.users.len(),
                                if w.users.len() == 1 { "" } else { "s" }
                            ),
                            None => String::new(),
                        };
                        println!(
                            "{}: ok ({} virtual services, {} real servers{}{}{}{}{web})",
                            f.display(),
                            c.lb.services.len(),
                            reals,
                            count(checks, "health check", "health checks"),
                            count(c.vrrp.instances.len(), "vrrp instance", "vrrp instances"),
                            count(c.cluster.nodes.len(), "node", "nodes"),
                            count(c.cluster.groups.len(), "group", "groups"),
                        );
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        code = exit::CONFIG;
                    }
                }
            }
            code
        }
    }
}
