//! `herd exec`: run a command on many nodes through their agents (pdsh, clush, gexec), and
//! `herd ping`: ask agents who and how they are.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herd_agent::client::{self, Event, Outcome, Run, Stream, Target};
use herd_agent::proto::{ExecRequest, StdinDigest, RELAYED_STDIN_MAX};
use herd_agent::tls::{self, Files};
use herd_core::config::{parse_duration, Config};
use herd_core::nodeset::NodeSet;
use tokio::sync::{mpsc, watch};

use super::exit;
use super::nodeset::load_config;

#[derive(Debug, clap::Args)]
pub struct Select {
    /// Nodes to run on (node sets: node[01-20], @web, ...; repeatable)
    #[arg(short = 'w', value_name = "NODESET")]
    nodes: Vec<String>,
    /// Every node in [nodes]
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Leave these nodes out (repeatable)
    #[arg(short = 'x', value_name = "NODESET")]
    exclude: Vec<String>,
    /// Leave this node out ([agent] name, else the host name)
    #[arg(short = 'X')]
    exclude_self: bool,
    /// Only the first N nodes of the set (gexec -n)
    #[arg(short = 'n', value_name = "N")]
    first: Option<usize>,
    #[command(flatten)]
    pub(super) conn: Conn,
}

/// How to reach agents: the config that names them and the certificate to show.
#[derive(Debug, clap::Args)]
pub struct Conn {
    /// Config with [nodes], [groups] and [agent] [default: /etc/herd/herd.toml, if present]
    #[arg(long, env = "HERD_CONFIG", value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// CA certificate [default: [agent] ca, else <pki>/ca.crt]
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate [default: [agent] client-cert, else <pki>/admin.crt]
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Its key [default: [agent] client-key, else <pki>/admin.key]
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Connect timeout (TCP and TLS), e.g. 3s, 500ms
    #[arg(short = 't', default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub(super) connect_timeout: Duration,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Output: each line as `node: line`, never split or mixed with another \
node's line; remote stderr goes to stderr. Standard input, when it is not a terminal, goes to \
every node; through relays (more nodes than --fanout) it is read whole first, at most 16 MiB, \
and each node checks it against the run's signature before running the command. Ctrl-C sends SIGINT to every remote command's process group; a second Ctrl-C sends \
SIGKILL.\n\nExit status: the highest remote exit status (pdsh -S); 124 for a node whose command \
timed out, 126 for a refused request, 255 for a node not reached or lost. Failures are summed up \
per node on stderr.\n\nExamples:\n  herd exec -w 'node[01-64]' uptime\n  herd exec -w @web -x web03 \
-b -- systemctl is-active nginx\n  herd exec -a -X -u 30s -- apt-get -y upgrade\n  herd exec -w \
'node[1-4]' 'echo $HERD_RANK of $HERD_SIZE on $HERD_NODE'"
)]
pub struct Args {
    #[command(flatten)]
    select: Select,
    /// Nodes served at once [default: [agent] fanout, else 128]
    #[arg(long, value_name = "K")]
    fanout: Option<usize>,
    /// Command timeout: the agent kills the command's process group after it
    #[arg(short = 'u', value_parser = parse_duration, value_name = "DURATION")]
    timeout: Option<Duration>,
    /// Gather nodes with identical output and exit status (clush -b, dshbak -c)
    #[arg(short = 'b', long = "gather")]
    gather: bool,
    /// No node prefix on output lines
    #[arg(short = 'N')]
    no_prefix: bool,
    /// Prefix lines with the node's name or its rank in the run (gexec's numbering)
    #[arg(long, value_enum, default_value = "name")]
    prefix: Prefix,
    /// Do not send standard input
    #[arg(long)]
    no_stdin: bool,
    /// Print the results as JSON (one object per node) at the end
    #[arg(long)]
    json: bool,
    /// The command (run with /bin/sh -c on each node)
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, num_args = 1.., value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Prefix {
    Name,
    Index,
}

#[derive(Debug, clap::Args)]
pub struct PingArgs {
    #[command(flatten)]
    select: Select,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// The nodes of the run, in order, with their agents' addresses.
fn targets(s: &Select, cfg: &Config) -> Result<Vec<Target>, String> {
    let cluster = &cfg.cluster;
    let mut set = NodeSet::new();
    if s.all {
        set.union(cluster.all());
    }
    for w in &s.nodes {
        set.union(cluster.resolve(w).map_err(|e| e.to_string())?);
    }
    if !s.all && s.nodes.is_empty() {
        return Err("which nodes? -w NODESET, or -a for every node in [nodes]".into());
    }
    for x in &s.exclude {
        set.difference(&cluster.resolve(x).map_err(|e| e.to_string())?);
    }
    if s.exclude_self {
        let me = crate::agent::node_name(&cfg.agent);
        set.difference(&NodeSet::from_iter([me.as_str()]));
    }
    if let Some(n) = s.first {
        set = set.first(n);
    }
    if set.is_empty() {
        return Err("the node set is empty".into());
    }
    Ok(set
        .iter()
        .enumerate()
        .map(|(rank, name)| target(cfg, rank as u32, name))
        .collect())
}

/// A node and its agent's address (`[nodes]`, else its name; `[agent] port` unless given).
pub(super) fn target(cfg: &Config, rank: u32, name: &str) -> Target {
    Target {
        rank,
        name: name.to_string(),
        addr: cfg.cluster.agent_address(name, cfg.agent.port),
    }
}

fn client_files(c: &Conn, cfg: &Config) -> Files {
    let (cert, key) = match (&c.cert, &c.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => cfg.agent.client_paths(),
    };
    Files {
        ca: c.ca.clone().unwrap_or_else(|| cfg.agent.ca_path()),
        cert,
        key,
    }
}

pub(super) fn tls_config(c: &Conn, cfg: &Config) -> Result<Arc<rustls::ClientConfig>, String> {
    tls::client_config(&client_files(c, cfg)).map_err(|e| e.to_string())
}

/// The admin's grant for this run, so that relays can carry it (see herd_agent::grant).
fn grant(
    s: &Select,
    cfg: &Config,
    req: &ExecRequest,
    targets: &[Target],
) -> Result<herd_agent::proto::Auth, String> {
    let (cert, key) = signer(&s.conn, cfg)?;
    let nodes: NodeSet = targets.iter().map(|t| t.name.as_str()).collect();
    herd_agent::grant::sign(req, &nodes, &cert, key.as_ref()).map_err(|e| e.to_string())
}

/// The client certificate and its key, to sign grants with.
pub(super) fn signer(
    c: &Conn,
    cfg: &Config,
) -> Result<
    (
        rustls::pki_types::CertificateDer<'static>,
        Arc<dyn rustls::sign::SigningKey>,
    ),
    String,
> {
    let files = client_files(c, cfg);
    let cert = herd_agent::pki::load_certs(&files.cert)
        .map_err(|e| e.to_string())?
        .remove(0);
    Ok((
        cert,
        tls::signing_key(&files.key).map_err(|e| e.to_string())?,
    ))
}

/// `--json` of a command over nodes: one object per node (its name added), in node order.
pub(super) fn print_json<R>(
    targets: &[Target],
    results: &[R],
    object: impl Fn(&R) -> serde_json::Value,
) {
    let list: Vec<_> = targets
        .iter()
        .zip(results)
        .map(|(t, r)| {
            let mut v = object(r);
            if let Some(o) = v.as_object_mut() {
                o.insert("node".into(), t.name.clone().into());
            }
            v
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&list).unwrap_or_default()
    );
}

/// Loads the config, the node list and the TLS identity; errors are printed.
pub(super) fn prepare(s: &Select) -> Result<(Vec<Target>, Arc<rustls::ClientConfig>, Config), u8> {
    let cfg = load_config(s.conn.config.as_ref()).map_err(|e| {
        eprintln!("{e}");
        exit::CONFIG
    })?;
    let targets = targets(s, &cfg).map_err(|e| {
        eprintln!("herd: {e}");
        exit::USAGE
    })?;
    let tls = tls_config(&s.conn, &cfg).map_err(|e| {
        eprintln!("herd: {e}");
        exit::CONFIG
    })?;
    Ok((targets, tls, cfg))
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
        .enable_all()
        .build()
        .expect("cannot start the async runtime")
}

/// What one node did, gathered for -b, --json and the summary.
#[derive(Debug, Default)]
struct NodeRecord {
    /// stdout and stderr interleaved as they came (for -b).
    combined: Vec<u8>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    outcome: Option<Outcome>,
}

pub fn run(a: Args) -> u8 {
    let (targets, tls, cfg) = match prepare(&a.select) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let use_stdin = !a.no_stdin && !std::io::stdin().is_terminal();
    let mut request = ExecRequest {
        command: a.command.join(" "),
        timeout_ms: a.timeout.map(|d| d.as_millis() as u64),
        stdin: use_stdin,
        size: targets.len() as u32,
        fanout: a.fanout.unwrap_or(cfg.agent.fanout).max(1) as u32,
        connect_timeout_ms: a.select.conn.connect_timeout.as_millis().max(1) as u64,
        ..ExecRequest::default()
    };
    let relayed = targets.len() > request.fanout as usize;
    // Through relays, stdin is read whole first: the grant covers its hash, so a relay
    // cannot change what the nodes below it read.
    let whole_stdin = match (relayed, use_stdin) {
        (true, true) => match read_whole_stdin(&mut std::io::stdin().lock()) {
            Ok(data) => {
                request.stdin_digest = Some(StdinDigest::of(&data));
                Some(data)
            }
            Err(e) => {
                eprintln!("herd: {e}");
                return exit::USAGE;
            }
        },
        _ => None,
    };
    if relayed {
        match grant(&a.select, &cfg, &request, &targets) {
            Ok(auth) => request.auth = Some(auth),
            Err(e) => {
                eprintln!("herd: cannot sign the run for the relays: {e}");
                return exit::CONFIG;
            }
        }
    }
    let run = Run { tls, request };
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let rt = runtime();
    let (stdin_tx, stdin_rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Vec<u8>>>();
    if let Some(data) = whole_stdin {
        let _ = stdin_tx.send(Arc::new(data));
        drop(stdin_tx);
    } else if use_stdin {
        // A plain thread: reading stdin blocks, and it must not hold up the runtime.
        std::thread::spawn(move || {
            let mut input = std::io::stdin().lock();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stdin_tx.send(Arc::new(buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
            drop(stdin_tx);
        });
    }
    let (sig_tx, sig_rx) = watch::channel(None);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let n = targets.len();
    let mut records: Vec<NodeRecord> = (0..n).map(|_| NodeRecord::default()).collect();
    let stream_lines = !a.gather && !a.json;
    rt.block_on(async {
        let stdin = use_stdin.then_some(stdin_rx);
        let run = tokio::spawn(client::exec(run, targets, stdin, sig_rx, ev_tx));
        let interrupts = tokio::spawn(async move {
            let mut count = 0;
            while tokio::signal::ctrl_c().await.is_ok() {
                count += 1;
                match count {
                    1 => {
                        eprintln!(
                            "herd: interrupt: SIGINT sent to the remote commands (again: SIGKILL)"
                        );
                        let _ = sig_tx.send(Some(2));
                    }
                    2 => {
                        eprintln!(
                            "herd: interrupt: SIGKILL sent to the remote commands (again: quit)"
                        );
                        let _ = sig_tx.send(Some(9));
                    }
                    _ => std::process::exit(130),
                }
            }
        });
        // Not locked for the whole run: the interrupt handler prints to stderr too. Each line
        // is one write into the buffer, and the buffer is flushed whole.
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout());
        let mut err = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
        while let Some(ev) = ev_rx.recv().await {
            match ev {
                Event::Line {
                    rank,
                    stream,
                    line,
                    newline: _,
                } => {
                    let r = &mut records[rank as usize];
                    if stream_lines {
                        let w: &mut dyn Write = match stream {
                            Stream::Stdout => &mut out,
                            Stream::Stderr => &mut err,
                        };
                        let mut buf = Vec::with_capacity(line.len() + 32);
                        if !a.no_prefix {
                            match a.prefix {
                                Prefix::Name => {
                                    buf.extend_from_slice(names[rank as usize].as_bytes())
                                }
                                Prefix::Index => buf.extend_from_slice(rank.to_string().as_bytes()),
                            }
                            buf.extend_from_slice(b": ");
                        }
                        buf.extend_from_slice(&line);
                        buf.push(b'\n');
                        // A closed stdout ends herd as SIGPIPE would.
                        if w.write_all(&buf).is_err() {
                            std::process::exit(141);
                        }
                    }
                    if a.gather {
                        r.combined.extend_from_slice(&line);
                        r.combined.push(b'\n');
                    }
                    if a.json {
                        let s = match stream {
                            Stream::Stdout => &mut r.stdout,
                            Stream::Stderr => &mut r.stderr,
                        };
                        s.extend_from_slice(&line);
                        s.push(b'\n');
                    }
                }
                Event::Done { rank, outcome } => records[rank as usize].outcome = Some(outcome),
            }
            if ev_rx.is_empty() {
                let _ = out.flush();
                let _ = err.flush();
            }
        }
        let _ = out.flush();
        let _ = err.flush();
        let _ = run.await;
        interrupts.abort();
    });
    rt.shutdown_background();
    let outcomes: Vec<Outcome> = records
        .iter()
        .map(|r| {
            r.outcome.clone().unwrap_or(Outcome::Failed {
                stage: client::Stage::Lost,
                message: "no result".into(),
            })
        })
        .collect();
    if a.gather {
        print_gathered(&names, &records, &outcomes);
    }
    if a.json {
        let list: Vec<_> = records
            .iter()
            .zip(&outcomes)
            .enumerate()
            .map(|(i, (r, o))| {
                serde_json::json!({
                    "node": names[i], "rank": i, "status": o.status(), "result": o,
                    "stdout": String::from_utf8_lossy(&r.stdout),
                    "stderr": String::from_utf8_lossy(&r.stderr),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
    }
    summarize(&names, &outcomes);
    outcomes
        .iter()
        .map(|o| o.status().clamp(0, 255) as u8)
        .max()
        .unwrap_or(0)
}

/// All of stdin, for a run through relays; an error past [`RELAYED_STDIN_MAX`].
fn read_whole_stdin(input: &mut impl Read) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    input
        .take(RELAYED_STDIN_MAX + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    if data.len() as u64 > RELAYED_STDIN_MAX {
        return Err(format!(
            "standard input is over {} MiB, the most a run through relays carries (each node \
             checks it whole against the signed run); use --fanout with at least as many \
             connections as nodes (stdin then streams), or --no-stdin",
            RELAYED_STDIN_MAX >> 20
        ));
    }
    Ok(data)
}

/// clush -b: one block per group of nodes with the same output and exit status.
fn print_gathered(names: &[String], records: &[NodeRecord], outcomes: &[Outcome]) {
    let mut groups: BTreeMap<(&[u8], i32), (usize, NodeSet)> = BTreeMap::new();
    for (i, (r, o)) in records.iter().zip(outcomes).enumerate() {
        if r.combined.is_empty() && !matches!(o, Outcome::Exited(_)) {
            continue; // not reached: the summary says so
        }
        let g = groups
            .entry((r.combined.as_slice(), o.status()))
            .or_insert((i, NodeSet::new()));
        g.1.insert(&names[i]);
    }
    let mut blocks: Vec<_> = groups.into_iter().collect();
    blocks.sort_by_key(|(_, (first, _))| *first);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for ((output, status), (_, set)) in blocks {
        let head = if status == 0 {
            set.fold()
        } else {
            format!("{} (exit {status})", set.fold())
        };
        let _ = writeln!(out, "---------------\n{head}\n---------------");
        let _ = out.write_all(output);
    }
    let _ = out.flush();
}

/// Failures and timeouts, grouped by what happened, on stderr.
fn summarize(names: &[String], outcomes: &[Outcome]) {
    let mut problems: BTreeMap<String, NodeSet> = BTreeMap::new();
    for (i, o) in outcomes.iter().enumerate() {
        if let Some(p) = o.problem() {
            problems.entry(p).or_default().insert(&names[i]);
        }
    }
    if problems.is_empty() {
        return;
    }
    let failed: usize = problems.values().map(NodeSet::len).sum();
    let mut lines: Vec<_> = problems.into_iter().collect();
    lines.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    let mut msg = format!("herd exec: {failed} of {} nodes failed:\n", outcomes.len());
    for (p, set) in lines {
        msg.push_str(&format!("  {set}: {p}\n"));
    }
    eprint!("{msg}");
}

pub fn ping(a: PingArgs) -> u8 {
    let (targets, tls, _) = match prepare(&a.select) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let limit = a.select.conn.connect_timeout;
    let rt = runtime();
    let results = rt.block_on(async {
        let tasks: Vec<_> = targets
            .iter()
            .cloned()
            .map(|t| {
                let tls = tls.clone();
                tokio::spawn(async move { client::ping(tls, &t, limit).await })
            })
            .collect();
        let mut res = Vec::new();
        for t in tasks {
            res.push(t.await.unwrap_or_else(|e| {
                Err(Outcome::Failed {
                    stage: client::Stage::Lost,
                    message: e.to_string(),
                })
            }));
        }
        res
    });
    let mut code = exit::OK;
    if a.json {
        print_json(&targets, &results, |r| match r {
            Ok(p) => serde_json::json!({"ok": true, "agent": p}),
            Err(o) => serde_json::json!({"ok": false, "result": o}),
        });
    }
    for (t, r) in targets.iter().zip(&results) {
        match r {
            Ok(p) if !a.json => println!(
                "{}: herd {} up {}s load {:.2} {:.2} {:.2} (you are {:?}, {})",
                t.name, p.version, p.uptime_secs, p.load[0], p.load[1], p.load[2], p.you, p.role
            ),
            Ok(_) => {}
            Err(o) => {
                if !a.json {
                    eprintln!("{}: {}", t.name, o.problem().unwrap_or_default());
                }
                code = exit::UNAVAILABLE;
            }
        }
    }
    code
}
