//! The monitor's timers under tokio's paused clock, with a fake prober and director: what
//! runs when, how alerts group, and what an apply keeps, starts and stops.

use super::plan::resolve_addr;
use super::*;

#[tokio::test]
async fn an_icmp_target_given_by_name_is_looked_up() {
    let cfg = herd_core::config::Config::parse(
        "t.toml",
        "[[health.check]]\nname = \"ping\"\ntype = \"icmp\"\nhosts = [\"localhost\"]\n",
    )
    .unwrap();
    let spec = &cfg.health.checks[0];
    let t = crate::probe::Target {
        host: "localhost".into(),
        addr: None,
        port: None,
    };
    let got = resolve_addr(&t, &spec.kind, spec.timeout).await;
    assert!(got.addr.is_some_and(|a| a.ip().is_loopback()), "{got:?}");
}
