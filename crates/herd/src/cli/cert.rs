//! `herd init` and `herd cert`: the cluster CA and the certificates it signs.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use herd_agent::pki::{self, Identity, Role};
use herd_agent::x509;
use herd_core::nodeset::NodeSet;

use super::exit;
use super::nodeset::load_config;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Creates, in the PKI directory (default /etc/herd/pki, or [agent] pki):\n  \
ca.crt     the cluster CA's certificate: every node and client needs it\n  \
ca.key     its key: keep it on the admin host only (it signs certificates)\n  \
admin.crt  an admin client certificate for herd exec, and admin.key\n\n\
Then, for each node: herd cert issue NODE, and copy ca.crt, NODE.crt and NODE.key to it."
)]
pub struct InitArgs {
    #[command(flatten)]
    pki: PkiArgs,
    /// The CA's name (its certificate's CN)
    #[arg(long, default_value = "herd cluster CA", value_name = "NAME")]
    name: String,
    /// The admin certificate's name (the audit log's "who")
    #[arg(long, default_value = "admin", value_name = "NAME")]
    admin: String,
    /// Replace an existing CA (every certificate it signed stops working)
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
pub struct PkiArgs {
    /// PKI directory [default: [agent] pki in the config, else /etc/herd/pki]
    #[arg(long, value_name = "DIR")]
    pki: Option<PathBuf>,
    /// Config whose [agent] pki names the directory
    #[arg(long, env = "HERD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl PkiArgs {
    fn dir(&self) -> Result<PathBuf, String> {
        if let Some(d) = &self.pki {
            return Ok(d.clone());
        }
        load_config(self.config.as_ref()).map(|c| c.agent.pki)
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Issue a key and certificate signed by the cluster CA: NAME.crt and NAME.key
    #[command(
        after_help = "Roles:\n  node       an agent (herd daemon with [agent] listen); NAME is \
the node's name, as in [nodes]\n  admin      may run commands (herd exec)\n  read-only  may only \
ask agents who and how they are (herd ping)\n\nRevoke a certificate by adding its serial (printed \
here, and by herd cert show) to [agent] revoked on the nodes, then herd reload."
    )]
    Issue {
        /// Node name or node set, node[01-64] (role node); a person's name (admin, read-only)
        name: String,
        #[arg(long, default_value = "node", value_parser = parse_role)]
        role: Role,
        /// Valid for this many days
        #[arg(long, default_value_t = pki::CERT_DAYS)]
        days: u32,
        /// Write the files here instead of the PKI directory
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Replace existing files
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        pki: PkiArgs,
    },
    /// Show who certificates name: name, role, serial, expiry
    Show {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// Unix seconds as RFC 3339 UTC.
fn utc(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("unknown role {s:?} (node, admin or read-only)"))
}

/// Writes `data` to `path` (mode `mode`), refusing to replace a file unless `force`.
fn write_file(path: &Path, data: &str, mode: u32, force: bool) -> Result<(), String> {
    if path.exists() && !force {
        return Err(format!("{} exists (--force replaces it)", path.display()));
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(data.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_pair(dir: &Path, stem: &str, issued: &pki::Issued, force: bool) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (crt, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    for p in [&crt, &key] {
        if p.exists() && !force {
            return Err(format!("{} exists (--force replaces it)", p.display()));
        }
    }
    write_file(&key, &issued.key_pem, 0o600, force)?;
    write_file(&crt, &issued.cert_pem, 0o644, force)
}

pub fn init(a: InitArgs) -> u8 {
    let res = (|| {
        let dir = a.pki.dir()?;
        if dir.join("ca.key").exists() && !a.force {
            return Err(format!(
                "{} already holds a CA (--force replaces it, and every certificate it signed \
                 stops working)",
                dir.display()
            ));
        }
        let ca = pki::new_ca(&a.name, pki::CA_DAYS).map_err(|e| e.to_string())?;
        let admin = pki::issue(
            &ca.cert_pem,
            &ca.key_pem,
            &a.admin,
            Role::Admin,
            pki::CERT_DAYS,
        )
        .map_err(|e| e.to_string())?;
        write_pair(&dir, "ca", &ca, a.force)?;
        write_pair(&dir, "admin", &admin, a.force)?;
        println!(
            "created the cluster CA in {d}: ca.crt (for every node and client) and ca.key (keep \
             it here only)\nadmin certificate {d}/admin.crt for {:?} (serial {})\nnext: herd cert \
             issue NODE, for each node",
            a.admin,
            admin.serial,
            d = dir.display()
        );
        Ok(())
    })();
    match res {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("herd init: {e}");
            exit::CANTCREAT
        }
    }
}

pub fn run(cmd: Cmd) -> u8 {
    match cmd {
        Cmd::Issue {
            name,
            role,
            days,
            out,
            force,
            pki: p,
        } => {
            let res = (|| {
                let dir = p.dir()?;
                let read = |f: &str| {
                    std::fs::read_to_string(dir.join(f)).map_err(|e| {
                        format!("{}: {e} (herd init creates the CA)", dir.join(f).display())
                    })
                };
                let (ca_crt, ca_key) = (read("ca.crt")?, read("ca.key")?);
                let names: Vec<String> = if role == Role::Node {
                    NodeSet::parse(&name)
                        .map_err(|e| e.to_string())?
                        .iter()
                        .map(str::to_string)
                        .collect()
                } else {
                    vec![name.clone()]
                };
                let out = out.unwrap_or(dir);
                for name in names {
                    let issued = pki::issue(&ca_crt, &ca_key, &name, role, days)
                        .map_err(|e| e.to_string())?;
                    write_pair(&out, &name, &issued, force)?;
                    println!(
                        "{}/{name}.crt and {name}.key: {role} {name:?}, serial {}, valid {days} days",
                        out.display(),
                        issued.serial
                    );
                }
                Ok::<(), String>(())
            })();
            match res {
                Ok(()) => exit::OK,
                Err(e) => {
                    eprintln!("herd cert issue: {e}");
                    exit::CANTCREAT
                }
            }
        }
        Cmd::Show { files, json } => {
            let mut code = exit::OK;
            let mut all = Vec::new();
            for f in files {
                let shown = pki::load_certs(&f)
                    .map_err(|e| e.to_string())
                    .and_then(|certs| {
                        let info = x509::parse(&certs[0]).ok_or("not a readable certificate")?;
                        Ok((info, Identity::from_der(&certs[0]).ok()))
                    });
                match shown {
                    Ok((info, id)) => {
                        let name = info.common_name.clone().unwrap_or_default();
                        let role = id.map(|i| i.role.to_string()).unwrap_or_else(|| {
                            if info.uris.is_empty() {
                                "(none: a CA or not herd's)".into()
                            } else {
                                "(unknown)".into()
                            }
                        });
                        if json {
                            all.push(serde_json::json!({
                                "file": f.display().to_string(), "name": name, "role": role,
                                "serial": info.serial, "not-before": utc(info.not_before),
                                "not-after": utc(info.not_after), "dns-names": info.dns_names,
                            }));
                        } else {
                            println!(
                                "{}: {name:?} role {role} serial {} valid {} to {}",
                                f.display(),
                                info.serial,
                                utc(info.not_before),
                                utc(info.not_after)
                            );
                        }
                    }
                    Err(e) => {
                        eprintln!("herd cert show: {e}");
                        code = exit::DATAERR;
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            }
            code
        }
    }
}
