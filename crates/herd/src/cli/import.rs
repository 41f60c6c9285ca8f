//! `herd import`: other tools' configs converted to herd's.

use std::path::PathBuf;

use herd_core::config::Config;
use herd_import::mon;

use super::exit;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Convert mon's mon.cf to herd's config (printed on stdout; notes on stderr)
    #[command(
        name = "mon.cf",
        after_help = "Hostgroups, watch/service blocks, interval, monitor + arguments, depend, \
period, alert/upalert, alertevery, alertafter and numalerts convert; `lvs.alert -V VIP -R RIP` \
lines become virtual services whose real servers the checks drive. Everything else is listed \
on stderr as `FILE:LINE: note`. The output is validated before it is printed.\n\nExample:\n  \
herd import mon.cf /etc/mon/mon.cf > /etc/herd/health.toml"
    )]
    MonCf {
        /// The mon.cf to read
        file: PathBuf,
    },
}

pub fn run(cmd: Cmd) -> u8 {
    match cmd {
        Cmd::MonCf { file } => {
            let src = match std::fs::read_to_string(&file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("herd: {}: {e}", file.display());
                    return exit::CONFIG;
                }
            };
            let imp = mon::import(&src);
            for n in &imp.notes {
                eprintln!("{}:{}: {}", file.display(), n.line, n.text);
            }
            // The converter's output must be a config herd accepts; if not, that is a bug.
            if let Err(e) = Config::parse("(converted)", &imp.toml) {
                eprintln!("herd: the converted config does not validate (a bug in herd):\n{e}");
                print!("{}", imp.toml);
                return exit::SOFTWARE;
            }
            print!("{}", imp.toml);
            exit::OK
        }
    }
}
