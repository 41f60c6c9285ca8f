//! `herd nodeset` against ClusterShell's `nodeset` (Debian's clustershell): the same
//! expressions, the same expansion and the same folded form.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::util::{herd_bin, TempDir};

/// Deterministic pseudo-random expressions in ClusterShell's syntax.
fn expressions(n: usize) -> Vec<String> {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    let prefixes = ["n", "node", "rack", "web-", "a.b", "db"];
    let mut out = Vec::new();
    while out.len() < n {
        let mut expr = String::new();
        for t in 0..=next(3) {
            if t > 0 {
                expr.push([',', ',', '!', '&', '^'][next(5) as usize]);
            }
            expr.push_str(prefixes[next(prefixes.len() as u64) as usize]);
            for d in 0..=next(2) {
                if d > 0 {
                    expr.push_str(["-n", "x", "."][next(3) as usize]);
                }
                let width = [0, 0, 2, 3][next(4) as usize];
                let mut items = Vec::new();
                for _ in 0..=next(3) {
                    let a = next(30);
                    let item = match next(4) {
                        0 => format!("{a:0width$}"),
                        1 => format!("{a:0width$}-{:0width$}/{}", a + next(20), 1 + next(4)),
                        _ => format!("{a:0width$}-{:0width$}", a + next(12)),
                    };
                    items.push(item);
                }
                if items.len() == 1 && next(2) == 0 && !items[0].contains('-') {
                    expr.push_str(&items[0]);
                } else {
                    expr.push_str(&format!("[{}]", items.join(",")));
                }
            }
        }
        out.push(expr);
    }
    out
}

const CLUSTERSHELL: &str = r#"
import sys
from ClusterShell.NodeSet import NodeSet
for line in sys.stdin:
    ns = NodeSet(line.strip())
    print(str(ns))
    print(" ".join(ns))
"#;

#[test]
fn nodeset_matches_clustershell() {
    let exprs = expressions(300);
    let mut py = Command::new("/usr/bin/python3")
        .args(["-c", CLUSTERSHELL])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    py.stdin
        .take()
        .unwrap()
        .write_all((exprs.join("\n") + "\n").as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ClusterShell's NodeSet is needed (Debian package clustershell; .ci/run installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = String::from_utf8(out.stdout).unwrap();
    let theirs: Vec<&str> = theirs.lines().collect();
    assert_eq!(theirs.len(), 2 * exprs.len());
    let mut differ = Vec::new();
    for (i, e) in exprs.iter().enumerate() {
        let run = |flag: &str| {
            let o = Command::new(herd_bin())
                .args(["nodeset", "--config", "/dev/null", flag, e])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{e}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8(o.stdout).unwrap().trim_end().to_string()
        };
        let (fold, expand) = (run("-f"), run("-e"));
        if fold != theirs[2 * i] || expand != theirs[2 * i + 1] {
            differ.push(format!(
                "{e}\n  herd:         {fold}\n  clustershell: {}\n  herd -e:         {expand}\n  clustershell -e: {}",
                theirs[2 * i],
                theirs[2 * i + 1]
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} differ:\n{}",
        differ.len(),
        exprs.len(),
        differ.join("\n")
    );
}

#[test]
fn nodeset_uses_the_configs_groups_and_reads_stdin() {
    let dir = TempDir::new("nodeset_groups");
    let cfg = dir.path("herd.toml");
    std::fs::write(
        &cfg,
        "[nodes]\n\"node[01-04]\" = \"127.0.1.[1-4]\"\n[groups]\nweb = \"node[01-03]\"\n",
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let run = |args: &[&str], stdin: &str| {
        let mut c = Command::new(herd_bin())
            .arg("nodeset")
            .args(["--config", &cfg])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
            String::from_utf8_lossy(&o.stderr).trim().to_string(),
        )
    };
    assert_eq!(run(&["-f", "@web"], "").1, "node[01-03]");
    assert_eq!(run(&["-c", "@all!@web"], "").1, "1");
    assert_eq!(
        run(&["-f", "-x", "node02"], "@web node07\n").1,
        "node[01,03,07]"
    );
    assert_eq!(
        run(&["-e", "-S", ",", "-i", "@web", "node[02-09]"], "").1,
        "node02,node03"
    );
    assert_eq!(
        run(&["-e", "--json", "node[1-2]"], "").1,
        r#"["node1","node2"]"#
    );
    assert_eq!(run(&["-ll"], "").1, "@web node[01-03]");
    let (code, _, err) = run(&["-f", "@db"], "");
    assert_eq!(code, Some(64));
    assert!(err.contains("unknown group @db"), "{err}");
    let (code, _, err) = run(&["-f", "node[3-1]"], "");
    assert_eq!(code, Some(64));
    assert!(err.contains("start is past the end"), "{err}");
}
