//! `herd ha`: director failover (VRRP).

use std::path::PathBuf;

use clap::Subcommand;
use herd_core::api::{Request, Response, VrrpStatus};

use super::health::{ago, clock, print_json, unexpected};
use super::{call, exit};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// VRRP instances: role, priority, master, virtual addresses, recent transitions
    #[command(
        after_help = "A standby instance (after `herd ha failover`) ranks lowest and does \
not take the VIP back until `herd ha resume`.\n\nDropped packets are counted by reason: short, \
version, type, checksum, length, ttl (routed: not 255), vrid (no instance), auth, interval."
    )]
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Planned hand-over: this director's master instances resign (priority 0) so the
    /// next-ranked director takes over after its skew time, and stand by
    #[command(
        after_help = "Open connections are not lost: for the instance's `handover-window` \
(default 30s) this director keeps serving them with the VIPs parked on lo, and the new master \
forwards their packets here. Standing by, an instance still takes over if no other director \
does. Run `herd ha resume` to let it rank by its priority again (it preempts if `preempt` is \
set)."
    )]
    Failover {
        /// Instances to hand over [default: every master instance]
        instances: Vec<String>,
    },
    /// End a standby: instances rank by their priority again
    Resume {
        /// Instances [default: all]
        instances: Vec<String>,
    },
}

pub fn run(cmd: Cmd, socket: Option<PathBuf>) -> u8 {
    match cmd {
        Cmd::Status { json } => match call(&socket, &Request::HaStatus) {
            Ok(Response::Ha { instances }) => {
                if json {
                    print_json(&instances);
                } else if instances.is_empty() {
                    println!("no vrrp instances configured ([[vrrp.instance]] in the config)");
                } else {
                    for i in &instances {
                        print_instance(i);
                    }
                }
                exit::OK
            }
            Ok(_) => unexpected(),
            Err(c) => c,
        },
        Cmd::Failover { instances } => match call(&socket, &Request::HaFailover { instances }) {
            Ok(Response::HaChanged { instances }) if instances.is_empty() => {
                eprintln!("herd: no instance is master on this director: nothing to hand over");
                exit::FAILURE
            }
            Ok(Response::HaChanged { instances }) => {
                println!(
                    "handed over: {} (standing by until `herd ha resume`)",
                    instances.join(", ")
                );
                exit::OK
            }
            Ok(_) => unexpected(),
            Err(c) => c,
        },
        Cmd::Resume { instances } => match call(&socket, &Request::HaResume { instances }) {
            Ok(Response::HaChanged { instances }) if instances.is_empty() => {
                println!("no instance was standing by");
                exit::OK
            }
            Ok(Response::HaChanged { instances }) => {
                println!("resumed: {}", instances.join(", "));
                exit::OK
            }
            Ok(_) => unexpected(),
            Err(c) => c,
        },
    }
}

fn print_instance(i: &VrrpStatus) {
    let prio = if i.priority == i.configured_priority {
        format!("{}", i.priority)
    } else {
        format!("{} (configured {})", i.priority, i.configured_priority)
    };
    println!(
        "{}  {}{}  vrid {} v{} on {} from {}",
        i.name,
        i.state.to_uppercase(),
        if i.standby { " (standby)" } else { "" },
        i.vrid,
        i.version,
        i.interface,
        i.address
    );
    println!(
        "  priority {prio}  advert {}ms  master {}",
        i.advert_interval_ms,
        i.master.as_deref().unwrap_or("-")
    );
    println!(
        "  vips {}{}",
        i.vips.join(" "),
        if i.real_server {
            "  (on lo: serving as a real server, ARP quiet)"
        } else {
            ""
        }
    );
    if let Some(h) = &i.handover {
        println!("  hand-over: {h}");
    }
    for t in &i.tracking {
        println!(
            "  track {} {}: {}  (weight {})",
            t.kind,
            t.name,
            if t.passing { "ok" } else { "FAILING" },
            t.weight
        );
    }
    let dropped: Vec<String> = i.dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "  adverts sent {}  received {}  dropped {}",
        i.adverts_sent,
        i.adverts_received,
        if dropped.is_empty() {
            "0".to_string()
        } else {
            dropped.join(", ")
        }
    );
    for t in i.transitions.iter().rev().take(5) {
        println!(
            "  {} ({} ago)  {} -> {}  {}",
            clock(t.at_ms),
            ago(t.at_ms),
            t.from,
            t.to,
            t.reason
        );
    }
}
