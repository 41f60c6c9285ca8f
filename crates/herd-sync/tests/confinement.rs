//! A receiver writes only beneath its root: hand-made plans and manifests (what a hostile
//! sender, or someone changing the tree during a transfer, can bring about) try every way out
//! — chained symlinks, symlinks and files where directories should be, a directory swapped
//! for a symlink mid-transfer, absolute targets, `..` — and a snapshot of the directory beside
//! the root must come out unchanged.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use herd_sync::apply::{apply, Source};
use herd_sync::manifest::{Entry, Kind, Manifest};
use herd_sync::plan::{Action, Plan};

/// A base directory holding `root` (the destination) and `outside` (what must not change).
struct Base(PathBuf);

impl Base {
    fn new(test: &str) -> Base {
        let p = std::env::temp_dir().join(format!("herd-confine-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(p.join("root")).unwrap();
        fs::create_dir_all(p.join("outside/cron.d")).unwrap();
        fs::write(p.join("outside/secret"), b"outside\n").unwrap();
        fs::set_permissions(p.join("outside/secret"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(p.join("outside/cron.d/job"), b"# job\n").unwrap();
        Base(p)
    }
    fn root(&self) -> PathBuf {
        self.0.join("root")
    }
    /// Everything outside the root: every path under the base but the root's own content,
    /// with its kind, mode, owner, size, mtime and content or target.
    fn snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        walk(&self.0, &self.0, &self.root(), &mut out);
        out
    }
}

impl Drop for Base {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn walk(base: &Path, dir: &Path, skip: &Path, out: &mut BTreeMap<String, String>) {
    for item in fs::read_dir(dir).unwrap() {
        let p = item.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(base).unwrap().display().to_string();
        let what = if m.file_type().is_symlink() {
            format!("link {}", fs::read_link(&p).unwrap().display())
        } else if m.is_file() {
            format!("file {:?}", fs::read(&p).unwrap())
        } else {
            "dir".to_string()
        };
        out.insert(
            rel,
            format!(
                "{what} mode {:o} {}:{} size {} mtime {}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.size(),
                m.mtime()
            ),
        );
        if m.is_dir() && p != skip {
            walk(base, &p, skip, out);
        }
    }
}

fn entry(path: &str, kind: Kind) -> Entry {
    Entry {
        path: path.into(),
        kind,
        mode: 0o777,
        uid: 0,
        gid: 0,
        mtime: 1_000_000_000,
        mtime_nsec: 0,
    }
}

fn file(path: &str) -> Entry {
    entry(
        path,
        Kind::File {
            size: 5,
            hash: None,
        },
    )
}

fn link(path: &str, target: &str) -> Entry {
    entry(
        path,
        Kind::Symlink {
            target: target.into(),
        },
    )
}

/// Content for every file: `evil\n`; `hook` runs before each file is written.
struct Evil<F: FnMut(&str)>(F);

impl<F: FnMut(&str)> Source for Evil<F> {
    fn copy_to(&mut self, rel: &str, out: &mut dyn Write) -> std::io::Result<u64> {
        (self.0)(rel);
        out.write_all(b"evil\n")?;
        Ok(5)
    }
}

fn run(base: &Base, actions: Vec<Action>) -> Result<herd_sync::apply::Stats, String> {
    let plan = Plan { actions, bytes: 0 };
    apply(&plan, &base.root(), &mut Evil(|_| {})).map_err(|e| e.to_string())
}

#[test]
fn chained_symlinks_do_not_lead_a_write_out() {
    let base = Base::new("chain");
    let before = base.snapshot();
    // `s -> .` stays inside; `t -> s/s/../../outside` reads as inside by its text but leads
    // to the base: it is refused, and a file under it cannot be written.
    let st = run(
        &base,
        vec![
            Action::Symlink(link("s", ".")),
            Action::Symlink(link("t", "s/s/../../outside")),
        ],
    )
    .unwrap();
    assert_eq!(st.refused.len(), 1, "{:?}", st.refused);
    assert!(fs::symlink_metadata(base.root().join("t")).is_err());
    // Even made by hand (someone else put it there), it is never followed.
    symlink("s/s/../../outside", base.root().join("t")).unwrap();
    for a in [
        Action::Write {
            entry: file("t/cron.d/evil"),
            basis: false,
        },
        Action::Write {
            entry: file("t/secret"),
            basis: true,
        },
        Action::Mkdir(entry("t/newdir", Kind::Dir)),
        Action::Remove {
            path: "t/secret".into(),
            dir: false,
        },
        Action::Remove {
            path: "t/cron.d".into(),
            dir: true,
        },
        Action::Meta(file("t/secret")),
        Action::Symlink(link("t/l", "x")),
    ] {
        let what = format!("{a:?}");
        assert!(run(&base, vec![a]).is_err(), "{what}");
    }
    assert_eq!(base.snapshot(), before);
}

#[test]
fn a_symlink_or_a_file_as_a_parent_is_never_gone_through() {
    let base = Base::new("parent");
    let before = base.snapshot();
    symlink("../outside", base.root().join("up")).unwrap();
    symlink(base.0.join("outside"), base.root().join("abs")).unwrap();
    fs::write(base.root().join("plain"), b"a file\n").unwrap();
    for parent in ["up", "abs", "plain"] {
        for a in [
            Action::Write {
                entry: file(&format!("{parent}/cron.d/evil")),
                basis: false,
            },
            Action::Write {
                entry: file(&format!("{parent}/secret")),
                basis: true,
            },
            Action::Mkdir(entry(&format!("{parent}/d"), Kind::Dir)),
            Action::Remove {
                path: format!("{parent}/secret"),
                dir: false,
            },
            Action::Remove {
                path: format!("{parent}/cron.d"),
                dir: true,
            },
            Action::Meta(file(&format!("{parent}/secret"))),
        ] {
            let what = format!("{a:?}");
            assert!(run(&base, vec![a]).is_err(), "{what}");
        }
    }
    // Metadata for a path that is a symlink here changes the link, never what it points at.
    run(&base, vec![Action::Meta(link("up", "../outside"))]).unwrap();
    assert!(run(&base, vec![Action::Meta(file("up"))]).is_err());
    assert!(run(&base, vec![Action::Meta(entry("abs", Kind::Dir))]).is_err());
    // Removing the link removes the link.
    run(
        &base,
        vec![Action::Remove {
            path: "up".into(),
            dir: true,
        }],
    )
    .unwrap();
    assert!(fs::symlink_metadata(base.root().join("up")).is_err());
    assert_eq!(base.snapshot(), before);
}

#[test]
fn a_directory_swapped_for_a_symlink_mid_transfer_is_not_followed() {
    let base = Base::new("swap");
    let before = base.snapshot();
    let root = base.root();
    let plan = Plan {
        actions: vec![
            Action::Mkdir(entry("sub", Kind::Dir)),
            Action::Write {
                entry: file("sub/one"),
                basis: false,
            },
            Action::Write {
                entry: file("other"),
                basis: false,
            },
            Action::Write {
                entry: file("sub/two"),
                basis: false,
            },
            Action::Meta(entry("sub", Kind::Dir)),
        ],
        bytes: 0,
    };
    // While `other` arrives, `sub` becomes a symlink to the outside.
    let res = apply(
        &plan,
        &root,
        &mut Evil(|rel| {
            if rel == "other" {
                fs::rename(root.join("sub"), root.join("sub.moved")).unwrap();
                symlink("../outside", root.join("sub")).unwrap();
            }
        }),
    );
    // `sub/two` goes into the directory `sub` was when it was opened (now `sub.moved`), and
    // the directory's metadata is not set through the symlink: the sync stops there.
    let err = res.unwrap_err().to_string();
    assert!(err.starts_with("sub: "), "{err}");
    assert_eq!(base.snapshot(), before);
    assert!(root.join("sub.moved/one").exists() && root.join("sub.moved/two").exists());
    // The same while a file of that very directory arrives: it lands in the directory it
    // was opened in, wherever that went, or nowhere.
    fs::remove_file(root.join("sub")).unwrap();
    let plan = Plan {
        actions: vec![
            Action::Mkdir(entry("sub", Kind::Dir)),
            Action::Write {
                entry: file("sub/one"),
                basis: false,
            },
            Action::Write {
                entry: file("sub/two"),
                basis: false,
            },
        ],
        bytes: 0,
    };
    let _ = apply(
        &plan,
        &root,
        &mut Evil(|rel| {
            if rel == "sub/one" {
                fs::rename(root.join("sub"), root.join("sub.again")).unwrap();
                symlink("../outside", root.join("sub")).unwrap();
            }
        }),
    );
    assert_eq!(base.snapshot(), before);
}

#[test]
fn absolute_targets_and_dotdot_paths_are_refused() {
    let base = Base::new("abs");
    let before = base.snapshot();
    let st = run(
        &base,
        vec![
            Action::Symlink(link("a", "/etc")),
            Action::Symlink(link("b", "../outside")),
            Action::Symlink(link("c", "x/../../outside")),
            Action::Symlink(link("ok", "inside/file")),
        ],
    )
    .unwrap();
    assert_eq!(st.refused.len(), 3, "{:?}", st.refused);
    assert_eq!(
        fs::read_link(base.root().join("ok")).unwrap(),
        Path::new("inside/file")
    );
    for rel in [
        "../outside/secret",
        "/etc/evil",
        "a/../../outside/x",
        "a//b",
        "./x",
    ] {
        assert!(
            run(
                &base,
                vec![Action::Write {
                    entry: file(rel),
                    basis: false,
                }],
            )
            .is_err(),
            "{rel}"
        );
    }
    assert_eq!(base.snapshot(), before);
}

#[test]
fn a_manifest_must_be_a_tree() {
    let root = entry("", Kind::Dir);
    let check = |entries: Vec<Entry>| {
        Manifest {
            entries,
            skipped: Vec::new(),
        }
        .check_tree()
    };
    assert!(check(vec![root.clone(), entry("d", Kind::Dir), file("d/f")]).is_ok());
    for (bad, why) in [
        (vec![root.clone(), link("l", "."), file("l/f")], "parent"),
        (vec![root.clone(), file("f"), file("f/g")], "parent"),
        (vec![root.clone(), file("d/f")], "parent"),
        (vec![root.clone(), file("f"), file("f")], "twice"),
        (vec![root.clone(), file("../x")], ".."),
        (vec![file("f")], "root"),
        (vec![link("", "/")], "root"),
    ] {
        let err = check(bad.clone()).unwrap_err().to_string();
        assert!(err.contains(why), "{bad:?}: {err}");
    }
}

#[test]
fn modes_and_owners_are_set_without_following() {
    let base = Base::new("meta");
    let root = base.root();
    let before = base.snapshot();
    fs::create_dir(root.join("d")).unwrap();
    fs::write(root.join("d/f"), b"x").unwrap();
    let mut f = file("d/f");
    f.mode = 0o640;
    let mut d = entry("d", Kind::Dir);
    d.mode = 0o750;
    run(&base, vec![Action::Meta(f), Action::Meta(d)]).unwrap();
    let mode = |p: &str| fs::metadata(root.join(p)).unwrap().mode() & 0o7777;
    assert_eq!((mode("d/f"), mode("d")), (0o640, 0o750));
    assert_eq!(
        fs::metadata(root.join("d/f")).unwrap().mtime(),
        1_000_000_000
    );
    assert_eq!(base.snapshot(), before);
}
