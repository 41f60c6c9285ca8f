//! `herd sync push`: make a directory on many nodes the copy of a local tree (Encluster's dua,
//! rsync without the daemon).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use herd_agent::proto::{SyncDone, SyncRequest};
use herd_sync::manifest::{scan, ScanOptions};

use super::exec::{prepare, print_json, runtime, signer, target, tls_config, Conn, Select};
use super::exit;
use super::nodeset::load_config;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Copy a local tree to a directory on every node of a node set
    #[command(
        after_help = "Each node compares the tree with its copy and receives only the files \
that differ (size and mtime, or --checksum); each arrives in a temporary file renamed into place, \
so an interrupted push leaves every file old or new. Modes, owners (as root), mtimes and symlinks \
are kept; symlinks that would lead out of the destination are refused. Beyond --fanout nodes the \
source sends each file once per group and agents pass it on (checked against the manifest the \
admin's key signed).\n\nExamples:\n  herd sync \
push /srv/www -w @web --delete\n  herd sync push ./conf -w 'node[01-08]' --dest /etc/app --dry-run"
    )]
    Push(PushArgs),
    /// Make a local directory the copy of a node's module (rsync NODE::MODULE)
    #[command(
        after_help = "The node's agent serves modules named in its config ([sync.module.NAME]: \
path, who may pull, excludes); it checks this certificate against the module's `allow` list. \
Only what differs travels (deltas for big changed files); each file arrives in a temporary file \
renamed into place; setuid and setgid bits are not kept (only an admin's push keeps them). A \
module's `schedule` makes nodes pull it on a timer instead of cron.\n\n\
Examples:\n  herd sync pull www3::webdata /var/www/html --delete\n  herd sync pull \
node01::conf ./conf --dry-run"
    )]
    Pull(PullArgs),
}

/// How files are compared and sent, both ways.
#[derive(Debug, clap::Args)]
pub struct How {
    /// Compare content by BLAKE3 hash instead of size and mtime
    #[arg(short = 'c', long)]
    checksum: bool,
    /// Compress the content on the wire (zstd; pays on text over slow links)
    #[arg(short = 'z', long)]
    compress: bool,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The node and its module, as NODE::MODULE
    source: String,
    /// The local directory to make the copy (created if missing)
    dest: PathBuf,
    #[command(flatten)]
    conn: Conn,
    /// Remove local files the module does not have
    #[arg(long)]
    delete: bool,
    /// Leave out matching paths (rsync's patterns), besides the module's own; repeatable
    #[arg(long = "exclude", value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Only list what would change
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    how: How,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
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
    /// Into this module of each node (its path; its `write` list says who may)
    #[arg(long, value_name = "NAME", conflicts_with = "dest")]
    module: Option<String>,
    /// Remove files the source does not have
    #[arg(long)]
    delete: bool,
    /// Leave out matching paths (rsync's patterns: *.log, cache/, /top); repeatable
    #[arg(long = "exclude", id = "exclude_pattern", value_name = "PATTERN")]
    exclude_pattern: Vec<String>,
    /// Only list what would change on each node (-n is exec's "first N nodes")
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    how: How,
    /// At most this rate on each connection the source opens: a number of KiB/s, or with a
    /// suffix K, M, G (rsync's)
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    bwlimit: Option<u64>,
    /// Nodes the source sends to at once; beyond, agents relay the content, each file once
    /// per group [default: [sync] fanout, else 2]
    #[arg(long, value_name = "K")]
    fanout: Option<usize>,
    /// Print one JSON object per node
    #[arg(long)]
    json: bool,
}

/// rsync's --bwlimit: KiB/s, or a number with K, M or G (powers of 1024); bytes a second.
fn parse_rate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1 << 10),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: a rate is a number of KiB/s, or e.g. 500K, 10M"))?;
    if !n.is_finite() || n <= 0.0 {
        return Err(format!("{s:?}: a rate is more than 0"));
    }
    Ok((n * mult as f64) as u64)
}

pub fn run(cmd: Cmd) -> u8 {
    match cmd {
        Cmd::Push(a) => push(a),
        Cmd::Pull(a) => pull(a),
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
    let dest = match &a.module {
        // The module's path, which the agent knows.
        Some(_) => String::new(),
        None => a.dest.clone().unwrap_or_else(|| src.display().to_string()),
    };
    let (targets, tls, cfg) = match prepare(&a.select) {
        Ok(t) => t,
        Err(code) => return code,
    };
    // Beyond --fanout nodes, agents relay the content (pushes into modules go direct: each
    // node's module decides who may write).
    let fanout = match a.module {
        Some(_) => targets.len(),
        None => a
            .fanout
            .or(cfg.sync_fanout)
            .unwrap_or(herd_core::config::sync::SYNC_FANOUT),
    }
    .max(1);
    let relayed = targets.len() > fanout;
    let opts = ScanOptions {
        // Through relays, every file's hash: each node checks what it gets against them.
        hash: a.how.checksum || relayed,
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
    let tree = herd_agent::sync::Tree::new(&src, &manifest);
    let mut req = SyncRequest {
        dest,
        delete: a.delete,
        checksum: a.how.checksum,
        dry_run: a.dry_run,
        exclude: a.exclude_pattern.clone(),
        module: a.module.clone(),
        connect_timeout_ms: a.select.conn.connect_timeout.as_millis().max(1) as u64,
        ..SyncRequest::default()
    };
    if relayed {
        // The admin's grant lets the relays carry the push: it covers the request and the
        // manifest (with its hashes).
        let text = herd_agent::sync::grant_text(&req, &tree.lines);
        let nodes: herd_core::nodeset::NodeSet = targets.iter().map(|t| t.name.as_str()).collect();
        let signed = signer(&a.select.conn, &cfg).and_then(|(cert, key)| {
            herd_agent::grant::sign_sync(&text, &nodes, &cert, key.as_ref())
                .map_err(|e| e.to_string())
        });
        match signed {
            Ok(auth) => req.auth = Some(auth),
            Err(e) => {
                eprintln!("herd sync: cannot sign the grant for the relays: {e}");
                return exit::CONFIG;
            }
        }
    }
    let progress = Arc::new(herd_agent::sync::Progress::default());
    let popts = herd_agent::sync::PushOptions {
        limit: a.select.conn.connect_timeout,
        bwlimit: a.bwlimit,
        progress: progress.clone(),
        deltas: Default::default(),
        compress: a.how.compress,
    };
    let show = !a.json && std::io::stderr().is_terminal();
    let rt = runtime();
    let nodes = targets.len();
    let results = rt.block_on(async {
        let ticker = show.then(|| {
            let p = progress.clone();
            tokio::spawn(async move {
                let start = std::time::Instant::now();
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    eprint!("\r\x1b[K{}", progress_line(&p, nodes, start.elapsed()));
                }
            })
        });
        let mut results =
            herd_agent::sync::push(tls, targets.clone(), fanout, req, tree, popts).await;
        results.sort_by_key(|(rank, _)| *rank);
        let out: Vec<_> = targets
            .iter()
            .map(|t| {
                results
                    .iter()
                    .find(|(r, _)| *r == t.rank)
                    .map(|(_, res)| res.clone())
                    .unwrap_or_else(|| {
                        Err(herd_agent::client::Outcome::Failed {
                            stage: herd_agent::client::Stage::Lost,
                            message: "no answer".into(),
                        })
                    })
            })
            .collect();
        if let Some(t) = ticker {
            t.abort();
            eprint!("\r\x1b[K");
        }
        out
    });
    rt.shutdown_background();
    let mut code = exit::OK;
    if a.json {
        print_json(&targets, &results, |r| match r {
            Ok(d) => serde_json::json!({"ok": d.refused.is_empty(), "result": d}),
            Err(o) => serde_json::json!({"ok": false, "error": o}),
        });
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

fn pull(a: PullArgs) -> u8 {
    let Some((node, module)) = a
        .source
        .split_once("::")
        .filter(|(n, m)| !n.is_empty() && !m.is_empty())
    else {
        eprintln!(
            "herd sync pull: {:?}: say NODE::MODULE, e.g. www3::webdata",
            a.source
        );
        return exit::USAGE;
    };
    let dest = match std::path::absolute(&a.dest) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("herd sync pull: {}: {e}", a.dest.display());
            return exit::USAGE;
        }
    };
    let cfg = match load_config(a.conn.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit::CONFIG;
        }
    };
    let tls = match tls_config(&a.conn, &cfg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("herd sync pull: {e}");
            return exit::CONFIG;
        }
    };
    let t = target(&cfg, 0, node);
    let local = SyncRequest {
        dest: dest.display().to_string(),
        delete: a.delete,
        checksum: a.how.checksum,
        dry_run: a.dry_run,
        exclude: a.exclude.clone(),
        ..SyncRequest::default()
    };
    let req = herd_agent::proto::PullRequest {
        module: module.to_string(),
        checksum: a.how.checksum,
        compress: a.how.compress,
    };
    let rt = runtime();
    let res = rt.block_on(herd_agent::sync::pull(
        tls,
        &t,
        req,
        local,
        a.conn.connect_timeout,
    ));
    rt.shutdown_background();
    if a.json {
        let v = match &res {
            Ok(d) => {
                serde_json::json!({"node": node, "module": module, "ok": d.refused.is_empty(), "result": d})
            }
            Err(o) => serde_json::json!({"node": node, "module": module, "ok": false, "error": o}),
        };
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    match res {
        Ok(d) => {
            if !a.json {
                print_done(&a.source, &d, a.dry_run);
            }
            if d.refused.is_empty() {
                exit::OK
            } else {
                exit::FAILURE
            }
        }
        Err(o) => {
            if !a.json {
                eprintln!("{}: {}", a.source, o.problem().unwrap_or_default());
            }
            exit::FAILURE
        }
    }
}

/// `sync: 3/8 nodes done, 1204/10103 files, 1.2 GiB of 8.0 GiB sent, 340.0 MiB/s, about 20 s left`.
fn progress_line(
    p: &herd_agent::sync::Progress,
    nodes: usize,
    elapsed: std::time::Duration,
) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let (sent, planned, done, files, files_sent) = (
        p.sent.load(Relaxed),
        p.planned.load(Relaxed),
        p.done.load(Relaxed),
        p.files.load(Relaxed),
        p.files_sent.load(Relaxed),
    );
    let rate = sent as f64 / elapsed.as_secs_f64().max(0.001);
    let left = if rate > 0.0 && planned > sent {
        format!(", about {:.0} s left", (planned - sent) as f64 / rate)
    } else {
        String::new()
    };
    format!(
        "sync: {done}/{nodes} nodes done, {files_sent}/{files} files, {} of {} sent, {}/s{left}",
        size(sent as f64),
        size(planned as f64),
        size(rate)
    )
}

fn size(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_rsync_reads_them_and_progress_reads_well() {
        assert_eq!(parse_rate("100"), Ok(100 * 1024));
        assert_eq!(parse_rate("1M"), Ok(1 << 20));
        assert_eq!(parse_rate("1.5k"), Ok(1536));
        assert!(parse_rate("0").is_err() && parse_rate("fast").is_err());
        let p = herd_agent::sync::Progress::default();
        p.planned
            .store(2 << 20, std::sync::atomic::Ordering::Relaxed);
        p.sent.store(1 << 20, std::sync::atomic::Ordering::Relaxed);
        p.files.store(10, std::sync::atomic::Ordering::Relaxed);
        p.files_sent.store(3, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            progress_line(&p, 8, std::time::Duration::from_secs(1)),
            "sync: 0/8 nodes done, 3/10 files, 1.0 MiB of 2.0 MiB sent, 1.0 MiB/s, about 1 s left"
        );
    }
}
