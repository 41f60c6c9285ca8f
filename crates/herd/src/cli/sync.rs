//! `herd sync push`: make a directory on many nodes the copy of a local tree (Encluster's dua,
//! rsync without the daemon).

use std::path::PathBuf;
use std::sync::Arc;

use herd_agent::proto::{SyncDone, SyncRequest};
use herd_sync::manifest::{scan, ScanOptions};

use super::exec::{prepare, runtime, Select};
use super::exit;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Copy a local tree to a directory on every node of a node set
    #[command(
        after_help = "Each node compares the tree with its copy and receives only the files \
that differ (size and mtime, or --checksum); each arrives in a temporary file renamed into place, \
so an interrupted push leaves every file old or new. Modes, owners (as root), mtimes and symlinks \
are kept; symlinks that would lead out of the destination are refused.\n\nExamples:\n  herd sync \
push /srv/www -w @web --delete\n  herd sync push ./conf -w 'node[01-08]' --dest /etc/app --dry-run"
    )]
    Push(PushArgs),
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The local directory to copy (its content goes into --dest)
    src: PathBuf,
    #[command(flatten)]
    select: Select,
    /// Where on the nodes [default: the same absolute path as SRC]
    #[arg(long, value_name = "PATH")]
    dest: Option<String>,
    /// Remove files the source does not have
    #[arg(long)]
    delete: bool,
    /// Leave out matching paths (rsync's patterns: *.log, cache/, /top); repeatable
    #[arg(long = "exclude", id = "exclude_pattern", value_name = "PATTERN")]
    exclude_pattern: Vec<String>,
    /// Only list what would change on each node (-n is exec's "first N nodes")
    #[arg(long)]
    dry_run: bool,
    /// Compare content by BLAKE3 hash instead of size and mtime
    #[arg(short = 'c', long)]
    checksum: bool,
    /// Nodes at once [default: [agent] fanout]
    #[arg(long, value_name = "K")]
    fanout: Option<usize>,
    /// Print one JSON object per node
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: Cmd) -> u8 {
    match cmd {
        Cmd::Push(a) => push(a),
    }
}

fn push(a: PushArgs) -> u8 {
    let src = match std::fs::canonicalize(&a.src) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("herd sync: {}: {e}", a.src.display());
            return exit::USAGE;
        }
    };
    let dest = a.dest.clone().unwrap_or_else(|| src.display().to_string());
    let (targets, tls, cfg) = match prepare(&a.select) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let opts = ScanOptions {
        hash: a.checksum,
        exclude: a.exclude_pattern.clone(),
    };
    let manifest = match scan(&src, &opts) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("herd sync: {e}");
            return exit::DATAERR;
        }
    };
    for (p, why) in &manifest.skipped {
        eprintln!("herd sync: skipped {p}: {why}");
    }
    let lines = Arc::new(herd_agent::sync::manifest_lines(&manifest));
    let req = SyncRequest {
        dest,
        delete: a.delete,
        checksum: a.checksum,
        dry_run: a.dry_run,
        exclude: a.exclude_pattern.clone(),
        rank: 0,
    };
    let fanout = a.fanout.unwrap_or(cfg.agent.fanout).max(1);
    let limit = a.select.connect_timeout;
    let rt = runtime();
    let results = rt.block_on(async {
        let slots = Arc::new(tokio::sync::Semaphore::new(fanout));
        let tasks: Vec<_> = targets
            .iter()
            .cloned()
            .map(|t| {
                let (tls, lines, src, slots) =
                    (tls.clone(), lines.clone(), src.clone(), slots.clone());
                let req = SyncRequest {
                    rank: t.rank,
                    ..req.clone()
                };
                tokio::spawn(async move {
                    let _slot = slots.acquire().await;
                    herd_agent::sync::push(tls, &t, req, lines, &src, limit).await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or_else(|e| {
                Err(herd_agent::client::Outcome::Failed {
                    stage: herd_agent::client::Stage::Lost,
                    message: e.to_string(),
                })
            }));
        }
        out
    });
    rt.shutdown_background();
    let mut code = exit::OK;
    if a.json {
        let list: Vec<_> = targets
            .iter()
            .zip(&results)
            .map(|(t, r)| match r {
                Ok(d) => {
                    serde_json::json!({"node": t.name, "ok": d.refused.is_empty(), "result": d})
                }
                Err(o) => serde_json::json!({"node": t.name, "ok": false, "error": o}),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
    }
    for (t, r) in targets.iter().zip(&results) {
        match r {
            Ok(d) => {
                if !a.json {
                    print_done(&t.name, d, a.dry_run);
                }
                if !d.refused.is_empty() {
                    code = exit::FAILURE;
                }
            }
            Err(o) => {
                if !a.json {
                    eprintln!("{}: {}", t.name, o.problem().unwrap_or_default());
                }
                code = exit::FAILURE;
            }
        }
    }
    code
}

fn print_done(node: &str, d: &SyncDone, dry_run: bool) {
    if dry_run {
        if d.changes.is_empty() {
            println!("{node}: up to date");
        }
        for c in &d.changes {
            println!("{node}: would {c}");
        }
        return;
    }
    println!(
        "{node}: {} written ({} bytes, {} sent), {} removed, {} attribute changes",
        d.written, d.bytes, d.received, d.removed, d.meta
    );
    for (p, why) in &d.refused {
        eprintln!("{node}: refused {p}: {why}");
    }
}
