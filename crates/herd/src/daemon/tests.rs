//! The daemon's apply path and API against a recording data plane: what a real data plane
//! would be told, in order.

use std::net::SocketAddr;
use std::sync::Arc;

use herd_core::api::RealEdit;
use herd_core::api::{Request, Response};
use herd_core::model::ServiceKey;
use herd_lb::dataplane::{Change, DataPlane, Event, Recording, Settings};

use super::{Daemon, Source};

fn config(weight: u32) -> String {
    format!(
        "[[lb.service]]\nprotocol = \"tcp\"\naddress = \"127.0.0.1:18080\"\nscheduler = \"wrr\"\n\
         [[lb.service.real]]\naddress = \"127.0.0.2:8080\"\nweight = {weight}\n\
         [[lb.service.real]]\naddress = \"127.0.0.3:8080\"\n"
    )
}

fn vip() -> ServiceKey {
    ServiceKey {
        protocol: herd_core::model::Protocol::Tcp,
        address: "127.0.0.1:18080".parse().unwrap(),
    }
}

fn real2() -> SocketAddr {
    "127.0.0.2:8080".parse().unwrap()
}

/// A daemon on a recording data plane, its config in `dir/herd.toml`.
fn daemon(dir: &std::path::Path, text: &str) -> (Arc<Daemon>, Arc<Recording>) {
    let path = dir.join("herd.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = herd_core::config::Config::load(&path).unwrap();
    let rec = Arc::new(Recording::default());
    let d = Daemon::assemble(
        Source::File(path),
        rec.clone(),
        Settings::from_config(&cfg.lb),
    )
    .unwrap();
    d.apply(cfg).unwrap();
    (d, rec)
}

fn changes(rec: &Recording) -> Vec<Change> {
    rec.take()
        .into_iter()
        .filter_map(|e| match e {
            Event::Changed(k, c) if k == vip() => Some(c),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_weight_change_reaches_the_data_plane_from_the_api_and_from_a_reload() {
    let dir = tempdir();
    let (d, rec) = daemon(dir.path(), &config(1));
    assert!(rec.take().contains(&Event::Apply(vec![vip()])));
    // ipvsadm -e / the dashboard's weight.
    let real = RealEdit::weight(real2(), 5);
    let resp = d.handle(Request::EditReal {
        service: vip(),
        real,
    });
    assert!(matches!(resp, Response::Ok), "{resp:?}");
    assert_eq!(changes(&rec), vec![Change::RealEdited(real2())]);
    // A reload that changes the weight in the config (5 → 3).
    std::fs::write(dir.path().join("herd.toml"), config(3)).unwrap();
    d.reload().unwrap();
    assert_eq!(changes(&rec), vec![Change::RealEdited(real2())]);
    // An operator's drain.
    let resp = d.handle(Request::SetRealState {
        service: vip(),
        address: real2(),
        state: herd_core::api::AdminState::Draining,
    });
    assert!(matches!(resp, Response::Ok), "{resp:?}");
    assert_eq!(
        changes(&rec),
        vec![Change::Admin(real2(), herd_core::api::AdminState::Draining)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_reload_the_data_plane_refuses_leaves_the_workers_and_the_running_config_as_they_were() {
    let dir = tempdir();
    let (d, rec) = daemon(dir.path(), &config(1));
    let before = d.config().clone();
    let workers = rec.workers();
    rec.take();
    // Three workers and a second service, which the data plane refuses to bind.
    let text = format!(
        "[lb]\nworkers = 3\n{}[[lb.service]]\nprotocol = \"tcp\"\naddress = \"127.0.0.1:18081\"\nscheduler = \"rr\"\n",
        config(7)
    );
    std::fs::write(dir.path().join("herd.toml"), text).unwrap();
    rec.fail_apply
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let err = d.reload().unwrap_err();
    assert!(err.message.contains("cannot listen on"), "{err:?}");
    // The workers went to 3 and back; the table and the running config are the old ones.
    let events = rec.take();
    assert!(events.contains(&Event::Workers(3)), "{events:?}");
    assert_eq!(events.last(), Some(&Event::Workers(workers)), "{events:?}");
    assert_eq!(rec.workers(), workers);
    assert_eq!(*d.config(), before);
    let weight = d.table().get(&vip()).unwrap().reals()[0].weight;
    assert_eq!(weight, 1);
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("herd-daemon-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}
