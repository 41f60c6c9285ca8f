use super::*;
use proptest::prelude::*;

fn e(expr: &str) -> Vec<String> {
    NodeSet::parse(expr)
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect()
}

fn f(expr: &str) -> String {
    NodeSet::parse(expr).unwrap().fold()
}

fn err(expr: &str) -> String {
    NodeSet::parse(expr).unwrap_err().to_string()
}

#[test]
fn ranges_padding_and_steps_expand_as_clustershell_does() {
    assert_eq!(e("node[1-3]"), ["node1", "node2", "node3"]);
    assert_eq!(e("node[01-03]"), ["node01", "node02", "node03"]);
    assert_eq!(e("node[08-10]"), ["node08", "node09", "node10"]);
    assert_eq!(e("n[0-10/5]"), ["n0", "n5", "n10"]);
    assert_eq!(e("n[1,3,5-6]"), ["n1", "n3", "n5", "n6"]);
    assert_eq!(
        e("rack[1-2]-node[01-02]"),
        [
            "rack1-node01",
            "rack1-node02",
            "rack2-node01",
            "rack2-node02"
        ]
    );
    assert_eq!(e("web"), ["web"]);
    // Sorted by number, not by text; duplicates collapse.
    assert_eq!(e("n10,n9,n[9-10],n1"), ["n1", "n9", "n10"]);
    // `01` and `1` are different names; shorter numbers sort first, as in ClusterShell.
    assert_eq!(e("n01,n1"), ["n1", "n01"]);
    assert_eq!(e("n[9-11],n[08-09]"), ["n9", "n08", "n09", "n10", "n11"]);
}

#[test]
fn operators_apply_left_to_right() {
    assert_eq!(f("node[1-10]!node[3-5]"), "node[1-2,6-10]");
    assert_eq!(f("node[1-10]&node[5-20]"), "node[5-10]");
    assert_eq!(f("node[1-5]^node[4-8]"), "node[1-3,6-8]");
    // ((1-10 ! 5) , 5) = 1-10, not 1-10 ! (5,5).
    assert_eq!(f("node[1-10]!node5,node5"), "node[1-10]");
    assert_eq!(f("a,b!a"), "b");
    assert_eq!(f("node[1-3],"), "node[1-3]");
}

#[test]
fn folding_keeps_padding_and_dimensions() {
    assert_eq!(f("node1"), "node1");
    assert_eq!(f("node1,node2,node3,node7"), "node[1-3,7]");
    assert_eq!(f("node01,node02,node03"), "node[01-03]");
    assert_eq!(f("node08,node09,node10"), "node[08-10]");
    assert_eq!(f("n01,n1,n2"), "n[1-2,01]");
    assert_eq!(f("n[9-11],n[08-09]"), "n[9,08-11]");
    assert_eq!(f("n[1-12],n05"), "n[1-9,05,10-12]");
    assert_eq!(f("rack[1-2]-node[01-04]"), "rack[1-2]-node[01-04]");
    assert_eq!(
        f("rack1-node[1-4],rack2-node[1-2]"),
        "rack1-node[1-4],rack2-node[1-2]"
    );
    assert_eq!(f("web,db[1-2],node[1-2]"), "db[1-2],node[1-2],web");
    assert_eq!(f("n[0-10/5]"), "n[0,5,10]");
}

#[test]
fn groups_resolve_and_nest() {
    let groups = |name: &str| match name {
        "web" => Some("web[01-04]".to_string()),
        "db" => Some("db[1-2]".to_string()),
        "all" => Some("@web,@db".to_string()),
        "loop" => Some("@loop".to_string()),
        _ => None,
    };
    let p = |s: &str| NodeSet::parse_with(s, &groups);
    assert_eq!(p("@all").unwrap().fold(), "db[1-2],web[01-04]");
    assert_eq!(p("@all!@db").unwrap().fold(), "web[01-04]");
    assert_eq!(p("@all&web[03-09]").unwrap().len(), 2);
    let e = p("@nope").unwrap_err().to_string();
    assert!(e.contains("unknown group @nope"), "{e}");
    let e = p("@loop").unwrap_err().to_string();
    assert!(e.contains("nests too deep"), "{e}");
}

#[test]
fn bad_expressions_are_errors_that_say_why() {
    assert!(err("node[1-3").contains("never closed"));
    assert!(err("node1-3]").contains("']' without '['"));
    assert!(err("node[3-1]").contains("start is past the end"));
    assert!(err("node[a-b]").contains("\"a\" is not a number"));
    assert!(err("node[1-4/0]").contains("step of 0"));
    assert!(err("node[]").contains("not a number"));
    assert!(err("node[1-99999999999]").contains("more than 1000000 nodes"));
    assert!(err("n[1-1000][1-1000][1-10]").contains("more than 1000000 nodes"));
    assert!(err("a!").contains("'!' needs a node set"));
    assert!(err("a b").contains("no spaces"));
    assert!(err("@web").contains("unknown group @web"));
}

#[test]
fn first_n_follows_the_order() {
    let s = NodeSet::parse("n[1-20]").unwrap();
    assert_eq!(s.first(3).fold(), "n[1-3]");
    assert_eq!(s.first(99).len(), 20);
}

fn name() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["n", "rack", "web-", "a.b"]),
        0u64..40,
        prop::bool::ANY,
        prop::option::of((prop::sample::select(vec!["-n", "x"]), 0u64..5)),
    )
        .prop_map(|(p, v, pad, tail)| {
            let mut s = if pad {
                format!("{p}{v:03}")
            } else {
                format!("{p}{v}")
            };
            if let Some((t, w)) = tail {
                s += &format!("{t}{w}");
            }
            s
        })
}

proptest! {
    /// Folding then expanding gives back the same set, whatever the names.
    #[test]
    fn fold_then_expand_is_the_identity(names in prop::collection::vec(name(), 0..60)) {
        let set: NodeSet = names.iter().map(String::as_str).collect();
        let folded = set.fold();
        let back = if folded.is_empty() { NodeSet::new() } else { NodeSet::parse(&folded).unwrap() };
        prop_assert_eq!(&back, &set, "folded as {}", folded);
        // And folding is stable.
        prop_assert_eq!(back.fold(), folded);
    }
}

#[test]
fn membership_without_expanding_agrees_with_the_expansion() {
    let exprs = [
        "node[0001-1000]",
        "n[1-20]x[1-3]",
        "n[01-12/3],n[100-102]!n04",
        "rack[1-2]-node[01-04]&rack2-node[01-10]",
        "a[1-5]^a[3-8]",
        "web,db[1-2]",
        "n[1-3]!n[1-3]",
    ];
    let probes = [
        "node0001",
        "node1000",
        "node1001",
        "node001",
        "n12x3",
        "n1x3",
        "n20x1",
        "n01",
        "n04",
        "n07",
        "n10",
        "n100",
        "rack2-node01",
        "rack1-node01",
        "rack2-node05",
        "a1",
        "a3",
        "a6",
        "a8",
        "web",
        "db1",
        "db3",
        "n1",
        "n2",
        "",
        "x",
    ];
    for expr in exprs {
        let set = NodeSet::parse(expr).unwrap();
        for p in probes {
            assert_eq!(
                contains_name(expr, p).unwrap(),
                set.contains(p),
                "{p} in {expr}"
            );
        }
        for n in set.iter() {
            assert!(contains_name(expr, n).unwrap(), "{n} in {expr}");
        }
    }
    assert!(contains_name("n[1-", "n1").is_err());
    assert!(contains_name("@web", "n1").is_err());
    assert!(contains_name("n1!", "n1").is_err() && NodeSet::parse("n1!").is_err());
}

proptest! {
    #[test]
    fn membership_matches_parse_for_folded_sets(
        names in proptest::collection::btree_set((0u32..3, 0u32..40, 0u32..3), 1..30),
        probe in (0u32..3, 0u32..45, 0u32..3),
    ) {
        let name = |(a, b, c): (u32, u32, u32)| format!("{}{b:0w$}x{c}", ["n", "node", "rk"][a as usize], w = if c == 2 { 3 } else { 0 });
        let set: NodeSet = names.iter().map(|&t| name(t)).collect();
        let folded = set.fold();
        let p = name(probe);
        prop_assert_eq!(contains_name(&folded, &p).unwrap(), set.contains(&p));
        for n in set.iter() {
            prop_assert!(contains_name(&folded, n).unwrap());
        }
    }
}
