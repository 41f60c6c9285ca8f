//! `herd nodeset`: expand, fold and count node sets, as ClusterShell's `nodeset` does.

use std::io::Read;
use std::path::PathBuf;

use herd_core::config::cluster::ClusterConfig;
use herd_core::config::Config;
use herd_core::nodeset::{NodeSet, NodeSetError};

use super::exit;

/// Where groups come from when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/herd/herd.toml";

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Syntax (ClusterShell's): ranges node[1-5], padding node[01-20], steps \
node[0-10/2], several brackets rack[1-2]-node[01-04], groups @web (from [groups] in the config; \
@all is every node in [nodes]), and the operators , (union) ! (difference) & (intersection) \
^ (symmetric difference), applied left to right.\n\nExamples:\n  \
herd nodeset -e 'node[1-3]'            node1 node2 node3\n  \
herd nodeset -f node1 node2 node3      node[1-3]\n  \
herd nodeset -c '@web!node2'           how many web nodes, node2 aside\n  \
herd nodeset -f 'rack[1-2]-node[1-4]' -x 'rack2-node4'\n\n\
With no NODESET, the node sets are read from standard input (separated by white space)."
)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["expand", "fold", "count", "list"])))]
pub struct Args {
    /// Print every node name (sorted as ClusterShell sorts them)
    #[arg(short, long)]
    expand: bool,
    /// Print the folded form
    #[arg(short, long)]
    fold: bool,
    /// Print how many nodes
    #[arg(short, long)]
    count: bool,
    /// List the groups (-ll: with their nodes)
    #[arg(short, long, action = clap::ArgAction::Count)]
    list: u8,
    /// Leave these nodes out
    #[arg(short = 'x', long, value_name = "NODESET")]
    exclude: Vec<String>,
    /// Keep only the nodes also in this set
    #[arg(short, long, value_name = "NODESET")]
    intersection: Vec<String>,
    /// Keep the nodes in exactly one of the result and this set
    #[arg(short = 'X', long, value_name = "NODESET")]
    xor: Vec<String>,
    /// Separator of the names that -e prints
    #[arg(short = 'S', long, default_value = " ", value_name = "STRING")]
    separator: String,
    /// Print JSON (a list of names for -e, the folded string for -f, a number for -c)
    #[arg(long)]
    json: bool,
    /// Config whose [nodes] and [groups] define @groups [default: /etc/herd/herd.toml, if present]
    #[arg(long, env = "HERD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Node sets (their union)
    #[arg(value_name = "NODESET")]
    nodesets: Vec<String>,
}

/// The config for cluster-wide commands: `--config`, else the default file if there is one,
/// else an empty config (no nodes, no groups, `[agent]` defaults).
pub fn load_config(config: Option<&PathBuf>) -> Result<Config, String> {
    let path = match config {
        Some(p) => p.clone(),
        None => {
            let p = PathBuf::from(DEFAULT_CONFIG);
            if !p.exists() {
                return Ok(Config::default());
            }
            p
        }
    };
    Config::load(&path).map_err(|e| e.to_string())
}

/// The cluster's nodes and groups (see [`load_config`]).
pub fn cluster(config: Option<&PathBuf>) -> Result<ClusterConfig, String> {
    load_config(config).map(|c| c.cluster)
}

pub fn run(a: Args) -> u8 {
    let cluster = match cluster(a.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit::CONFIG;
        }
    };
    if a.list > 0 {
        for name in cluster.groups.keys() {
            match (a.list, cluster.resolve(&format!("@{name}"))) {
                (1, _) => println!("@{name}"),
                (_, Ok(set)) => println!("@{name} {set}"),
                (_, Err(e)) => println!("@{name} ({e})"),
            }
        }
        return exit::OK;
    }
    let set = match build(&a, &cluster) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("herd: {e}");
            return exit::USAGE;
        }
    };
    match (a.expand, a.fold, a.json) {
        (true, _, true) => println!("{}", json(&set.expanded())),
        (true, _, false) => println!("{}", set.expanded().join(&a.separator)),
        (_, true, true) => println!("{}", json(&set.fold())),
        (_, true, false) => println!("{set}"),
        _ => println!("{}", set.len()),
    }
    exit::OK
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn build(a: &Args, cluster: &ClusterConfig) -> Result<NodeSet, NodeSetError> {
    let mut inputs = a.nodesets.clone();
    if inputs.is_empty() {
        let mut s = String::new();
        // Unreadable stdin is the same as an empty one: the set is empty.
        let _ = std::io::stdin().read_to_string(&mut s);
        inputs = s.split_whitespace().map(str::to_string).collect();
    }
    let mut set = NodeSet::new();
    for i in &inputs {
        set.union(cluster.resolve(i)?);
    }
    for x in &a.exclude {
        set.difference(&cluster.resolve(x)?);
    }
    for i in &a.intersection {
        set.intersection(&cluster.resolve(i)?);
    }
    for x in &a.xor {
        set.symmetric_difference(cluster.resolve(x)?);
    }
    Ok(set)
}
