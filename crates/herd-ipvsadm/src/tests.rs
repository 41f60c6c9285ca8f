//! Tests: every seed command line, every option and error, and the exact output of the real
//! ipvsadm 1.31 (Debian's binary, fed a fake kernel table) for the same tables.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::resolve::{inet_aton, ntop6, strtol_exact};
use super::*;
use herd_core::api::{ConnEntry, ErrorKind, Rates, RealStatus, ServiceStatus, Stats};
use herd_core::model::{
    Forward, Persistence, Protocol, RealSpec, SchedFlags, SchedulerKind, ServiceKey, ServiceSpec,
    Timeouts,
};

// ---------------------------------------------------------------------------------------------
// Expected outputs, as the real ipvsadm 1.31 printed them. `|` marks the end of each line, so
// that trailing blanks are visible.

const SEED001_LN: &str = r"IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
TCP  211.238.41.170:22 wlc|
  -> 211.238.41.165:22            Route   1      0          0         |
TCP  211.238.41.170:80 wlc persistent 360|
  -> 211.238.41.165:80            Route   100    0          0         |
  -> 211.238.41.166:80            Route   100    0          0         |";

const SEED001_L: &str = r"IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
TCP  211.238.41.170:ssh wlc|
  -> 211.238.41.165:ssh           Route   1      0          0         |
TCP  211.238.41.170:http wlc persistent 360|
  -> 211.238.41.165:http          Route   100    0          0         |
  -> 211.238.41.166:http          Route   100    0          0         |";

const SEED001_SAVE: &str = r"-A -t 211.238.41.170:ssh -s wlc|
-a -t 211.238.41.170:ssh -r 211.238.41.165:ssh -g -w 1|
-A -t 211.238.41.170:http -s wlc -p 360|
-a -t 211.238.41.170:http -r 211.238.41.165:http -g -w 100|
-a -t 211.238.41.170:http -r 211.238.41.166:http -g -w 100|";

const LN: &str = r"IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
TCP  200.0.0.1:80 sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0|
  -> 200.0.0.2:80                 Route   1      0          0         |
  -> 200.0.0.3:8080               Masq    0      12         34        |
  -> 10.0.0.9:80                  Tunnel  65535  0          0         |
TCP  10.0.0.1:80 mh (mh-fallback)|
UDP  10.0.0.1:53 rr|
  -> 10.0.1.2:53                  Masq    5      1          2         |
TCP  [::1]:80 lc|
TCP  [2001:db8::1]:443 wlc persistent 3600 mask 64|
  -> [::ffff:1.2.3.4]:443         Masq    2      0          0         |
  -> [2001:db8::10]:443           Masq    1      0          0         |
UDP  [2001:db8::1]:53 wrr|";

const LN_STATS: &str = r"IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes|
  -> RemoteAddress:Port|
TCP  200.0.0.1:80                  123456K 99999999    1000M     123T   99999G|
  -> 200.0.0.2:80                        0        0        0        0        0|
  -> 200.0.0.3:8080                123456K 99999999    1000M     123T   99999G|
  -> 10.0.0.9:80                         0        0        0        0        0|
TCP  10.0.0.1:80                         0        0        0        0        0|
UDP  10.0.0.1:53                         5       10       20     3000     4000|
  -> 10.0.1.2:53                         5       10       20     3000     4000|
TCP  [::1]:80                            0        0        0        0        0|
TCP  [2001:db8::1]:443                   1        2        3        4        5|
  -> [::ffff:1.2.3.4]:443                0        0        0        0        0|
  -> [2001:db8::10]:443                  0        0        0        0        0|
UDP  [2001:db8::1]:53                    0        0        0        0        0|";

const LN_RATE: &str = r"IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS|
  -> RemoteAddress:Port|
TCP  200.0.0.1:80                        1        2        3  123456K    1234M|
  -> 200.0.0.2:80                        0        0        0        0        0|
  -> 200.0.0.3:8080                      1        2        3  123456K    1234M|
  -> 10.0.0.9:80                         0        0        0        0        0|
TCP  10.0.0.1:80                         0        0        0        0        0|
UDP  10.0.0.1:53                         1        2        3        4        5|
  -> 10.0.1.2:53                         1        2        3        4        5|
TCP  [::1]:80                            0        0        0        0        0|
TCP  [2001:db8::1]:443                   6        7        8        9       10|
  -> [::ffff:1.2.3.4]:443                0        0        0        0        0|
  -> [2001:db8::10]:443                  0        0        0        0        0|
UDP  [2001:db8::1]:53                    0        0        0        0        0|";

const LN_STATS_EXACT: &str = r"IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes|
  -> RemoteAddress:Port|
TCP  200.0.0.1:80                 123456789 99999999 1000000000 123456789012345 99999999999999|
  -> 200.0.0.2:80                        0        0        0        0        0|
  -> 200.0.0.3:8080               123456789 99999999 1000000000 123456789012345 99999999999999|
  -> 10.0.0.9:80                         0        0        0        0        0|
TCP  10.0.0.1:80                         0        0        0        0        0|
UDP  10.0.0.1:53                         5       10       20     3000     4000|
  -> 10.0.1.2:53                         5       10       20     3000     4000|
TCP  [::1]:80                            0        0        0        0        0|
TCP  [2001:db8::1]:443                   1        2        3        4        5|
  -> [::ffff:1.2.3.4]:443                0        0        0        0        0|
  -> [2001:db8::10]:443                  0        0        0        0        0|
UDP  [2001:db8::1]:53                    0        0        0        0        0|";

const LN_RATE_EXACT: &str = r"IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS|
  -> RemoteAddress:Port|
TCP  200.0.0.1:80                        1        2        3 123456789 1234567890|
  -> 200.0.0.2:80                        0        0        0        0        0|
  -> 200.0.0.3:8080                      1        2        3 123456789 1234567890|
  -> 10.0.0.9:80                         0        0        0        0        0|
TCP  10.0.0.1:80                         0        0        0        0        0|
UDP  10.0.0.1:53                         1        2        3        4        5|
  -> 10.0.1.2:53                         1        2        3        4        5|
TCP  [::1]:80                            0        0        0        0        0|
TCP  [2001:db8::1]:443                   6        7        8        9       10|
  -> [::ffff:1.2.3.4]:443                0        0        0        0        0|
  -> [2001:db8::10]:443                  0        0        0        0        0|
UDP  [2001:db8::1]:53                    0        0        0        0        0|";

const LN_THRESHOLDS: &str = r"IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn |
  -> RemoteAddress:Port|
TCP  200.0.0.1:80 sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0|
  -> 200.0.0.2:80                 0          0          0          0         |
  -> 200.0.0.3:8080               100        75         12         34        |
  -> 10.0.0.9:80                  0          0          0          0         |
TCP  10.0.0.1:80 mh (mh-fallback)|
UDP  10.0.0.1:53 rr|
  -> 10.0.1.2:53                  0          0          1          2         |
TCP  [::1]:80 lc|
TCP  [2001:db8::1]:443 wlc persistent 3600 mask 64|
  -> [::ffff:1.2.3.4]:443         0          0          0          0         |
  -> [2001:db8::10]:443           0          0          0          0         |
UDP  [2001:db8::1]:53 wrr|";

const LN_PERSISTENT: &str = r"IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn |
  -> RemoteAddress:Port|
TCP  200.0.0.1:80 sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0|
  -> 200.0.0.2:80                 1         0           0          0         |
  -> 200.0.0.3:8080               0         5           12         34        |
  -> 10.0.0.9:80                  65535     0           0          0         |
TCP  10.0.0.1:80 mh (mh-fallback)|
UDP  10.0.0.1:53 rr|
  -> 10.0.1.2:53                  5         0           1          2         |
TCP  [::1]:80 lc|
TCP  [2001:db8::1]:443 wlc persistent 3600 mask 64|
  -> [::ffff:1.2.3.4]:443         2         0           0          0         |
  -> [2001:db8::10]:443           1         0           0          0         |
UDP  [2001:db8::1]:53 wrr|";

const LN_TUN_INFO: &str = r"IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn|
TCP  200.0.0.1:80 sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0|
  -> 200.0.0.2:80                 Route   n/a           1      0          0         |
  -> 200.0.0.3:8080               Masq    n/a           0      12         34        |
  -> 10.0.0.9:80                  Tunnel  ipip          65535  0          0         |
TCP  10.0.0.1:80 mh (mh-fallback)|
UDP  10.0.0.1:53 rr|
  -> 10.0.1.2:53                  Masq    n/a           5      1          2         |
TCP  [::1]:80 lc|
TCP  [2001:db8::1]:443 wlc persistent 3600 mask 64|
  -> [::ffff:1.2.3.4]:443         Masq    n/a           2      0          0         |
  -> [2001:db8::10]:443           Masq    n/a           1      0          0         |
UDP  [2001:db8::1]:53 wrr|";

const LN_NOSORT: &str = r"IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
UDP  10.0.0.1:53 rr|
  -> 10.0.1.2:53                  Masq    5      1          2         |
TCP  200.0.0.1:80 sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0|
  -> 200.0.0.3:8080               Masq    0      12         34        |
  -> 10.0.0.9:80                  Tunnel  65535  0          0         |
  -> 200.0.0.2:80                 Route   1      0          0         |
TCP  10.0.0.1:80 mh (mh-fallback)|
TCP  [2001:db8::1]:443 wlc persistent 3600 mask 64|
  -> [2001:db8::10]:443           Masq    1      0          0         |
  -> [::ffff:1.2.3.4]:443         Masq    2      0          0         |
UDP  [2001:db8::1]:53 wrr|
TCP  [::1]:80 lc|";

const SN: &str = r"-A -t 200.0.0.1:80 -s sh -p 300 -M 255.255.255.0 -b sh-fallback,sh-port|
-a -t 200.0.0.1:80 -r 200.0.0.2:80 -g -w 1|
-a -t 200.0.0.1:80 -r 200.0.0.3:8080 -m -w 0|
-a -t 200.0.0.1:80 -r 10.0.0.9:80 -i -w 65535 --tun-type ipip|
-A -t 10.0.0.1:80 -s mh -b mh-fallback|
-A -u 10.0.0.1:53 -s rr|
-a -u 10.0.0.1:53 -r 10.0.1.2:53 -m -w 5|
-A -t [::1]:80 -s lc|
-A -t [2001:db8::1]:443 -s wlc -p 3600 -M 64|
-a -t [2001:db8::1]:443 -r [::ffff:1.2.3.4]:443 -m -w 2|
-a -t [2001:db8::1]:443 -r [2001:db8::10]:443 -m -w 1|
-A -u [2001:db8::1]:53 -s wrr|";

const L_NAMES: &str = r"IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
TCP  frontend-virtual-service.exa sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0|
  -> 200.0.0.2:http               Route   1      0          0         |
  -> 200.0.0.3:http-alt           Masq    0      12         34        |
  -> a-very-long-host-name-for-te Tunnel  65535  0          0         |
TCP  10.0.0.1:http mh (mh-fallback)|
UDP  10.0.0.1:domain rr|
  -> 10.0.1.2:domain              Masq    5      1          2         |
TCP  [::1]:http lc|
TCP  [v6-frontend.example]:https wlc persistent 3600 mask 64|
  -> [::ffff:1.2.3.4]:https       Masq    2      0          0         |
  -> [v6host.example]:https       Masq    1      0          0         |
UDP  [v6-frontend.example]:domain wrr|";

const S_NAMES: &str = r"-A -t frontend-virtual-service.example.org:http -s sh -p 300 -M 255.255.255.0 -b sh-fallback,sh-port|
-a -t frontend-virtual-service.example.org:http -r 200.0.0.2:http -g -w 1|
-a -t frontend-virtual-service.example.org:http -r 200.0.0.3:http-alt -m -w 0|
-a -t frontend-virtual-service.example.org:http -r a-very-long-host-name-for-testing.example.com:http -i -w 65535 --tun-type ipip|
-A -t 10.0.0.1:http -s mh -b mh-fallback|
-A -u 10.0.0.1:domain -s rr|
-a -u 10.0.0.1:domain -r 10.0.1.2:domain -m -w 5|
-A -t [::1]:http -s lc|
-A -t [v6-frontend.example]:https -s wlc -p 3600 -M 64|
-a -t [v6-frontend.example]:https -r [::ffff:1.2.3.4]:https -m -w 2|
-a -t [v6-frontend.example]:https -r [v6host.example]:https -m -w 1|
-A -u [v6-frontend.example]:domain -s wrr|";

const L_STATS_NAMES: &str = r"IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes|
  -> RemoteAddress:Port|
TCP  frontend-virtual-service.exa  123456K 99999999    1000M     123T   99999G|
  -> 200.0.0.2:http                      0        0        0        0        0|
  -> 200.0.0.3:http-alt            123456K 99999999    1000M     123T   99999G|
  -> a-very-long-host-name-for-te        0        0        0        0        0|
TCP  10.0.0.1:http                       0        0        0        0        0|
UDP  10.0.0.1:domain                     5       10       20     3000     4000|
  -> 10.0.1.2:domain                     5       10       20     3000     4000|
TCP  [::1]:http                          0        0        0        0        0|
TCP  [v6-frontend.example]:https         1        2        3        4        5|
  -> [::ffff:1.2.3.4]:https              0        0        0        0        0|
  -> [v6host.example]:https              0        0        0        0        0|
UDP  [v6-frontend.example]:domain        0        0        0        0        0|";

const LNC: &str = r"IPVS connection entries|
pro expire state       source             virtual            destination|
TCP 14:55  ESTABLISHED 10.0.0.100:50000   200.0.0.1:80       200.0.0.3:8080|
UDP 04:59  UDP         10.0.0.100:4660    10.0.0.1:53        10.0.1.2:53|
TCP 100:00 NONE        10.0.0.100:0       200.0.0.1:80       200.0.0.3:8080|
TCP 00:59  FIN_WAIT    [2001:db8::99]:50000 [2001:db8::1]:443  [2001:db8::10]:443|";

const LC: &str = r"IPVS connection entries|
pro expire state       source             virtual            destination|
TCP 14:55  ESTABLISHED 10.0.0.100:50000   frontend-virtual-service.example.org:http 200.0.0.3:http-alt|
UDP 04:59  UDP         10.0.0.100:4660    10.0.0.1:domain    10.0.1.2:domain|
TCP 100:00 NONE        10.0.0.100:0       frontend-virtual-service.example.org:http 200.0.0.3:http-alt|
TCP 00:59  FIN_WAIT    [2001:db8::99]:50000 [v6-frontend.example]:https [v6host.example]:https|";

const LNC_PERSISTENT: &str = r"IPVS connection entries|
pro expire state       source             virtual            destination        pe name          pe_data|
TCP 14:55  ESTABLISHED 10.0.0.100:50000   200.0.0.1:80       200.0.0.3:8080|
UDP 04:59  UDP         10.0.0.100:4660    10.0.0.1:53        10.0.1.2:53|
TCP 100:00 NONE        10.0.0.100:0       200.0.0.1:80       200.0.0.3:8080|
TCP 00:59  FIN_WAIT    [2001:db8::99]:50000 [2001:db8::1]:443  [2001:db8::10]:443|";

const TIMEOUT: &str = r"Timeout (tcp tcpfin udp): 900 120 300|";

/// Expected text: `|` ends each line; every line ends with a newline.
fn text(marked: &str) -> String {
    marked
        .lines()
        .map(|l| format!("{}\n", l.strip_suffix('|').unwrap_or(l)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Builders.

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tcp(addr: &str) -> ServiceKey {
    ServiceKey {
        protocol: Protocol::Tcp,
        address: sa(addr),
    }
}

fn udp(addr: &str) -> ServiceKey {
    ServiceKey {
        protocol: Protocol::Udp,
        address: sa(addr),
    }
}

fn spec(key: ServiceKey, scheduler: SchedulerKind) -> ServiceSpec {
    ServiceSpec {
        key,
        name: None,
        scheduler,
        sched_flags: SchedFlags::default(),
        persistence: None,
        proxy_protocol: false,
    }
}

fn persistent(mut s: ServiceSpec, timeout: u32, prefix: u8) -> ServiceSpec {
    s.persistence = Some(Persistence { timeout, prefix });
    s
}

fn flags(mut s: ServiceSpec, fallback: bool, port: bool) -> ServiceSpec {
    s.sched_flags = SchedFlags { fallback, port };
    s
}

fn real(addr: &str, weight: u32, forward: Forward) -> RealSpec {
    RealSpec {
        address: sa(addr),
        weight,
        upper_threshold: 0,
        lower_threshold: 0,
        forward,
    }
}

fn thresholds(mut r: RealSpec, upper: u32, lower: u32) -> RealSpec {
    r.upper_threshold = upper;
    r.lower_threshold = lower;
    r
}

fn stats(v: [u64; 5]) -> Stats {
    Stats {
        conns: v[0],
        pkts_in: v[1],
        pkts_out: v[2],
        bytes_in: v[3],
        bytes_out: v[4],
    }
}

fn rates(v: [u64; 5]) -> Rates {
    Rates {
        cps: v[0],
        pps_in: v[1],
        pps_out: v[2],
        bps_in: v[3],
        bps_out: v[4],
    }
}

fn rstat(spec: RealSpec, active: u32, inactive: u32, persist: u32) -> RealStatus {
    RealStatus {
        spec,
        active_conns: active,
        inactive_conns: inactive,
        persistent_conns: persist,
        overloaded: false,
        draining: false,
        health: Default::default(),
        configured_weight: 0,
        admin: Default::default(),
        sorry: false,
        stats: Stats::default(),
        rates: Rates::default(),
    }
}

fn sstat(spec: ServiceSpec, reals: Vec<RealStatus>) -> ServiceStatus {
    ServiceStatus {
        spec,
        reals,
        quorum: None,
        stats: Stats::default(),
        rates: Rates::default(),
    }
}

/// The configuration of seed 001, in the order the kernel would hold it.
fn seed001() -> Vec<ServiceStatus> {
    let web = persistent(spec(tcp("211.238.41.170:80"), SchedulerKind::Wlc), 360, 32);
    let ssh = spec(tcp("211.238.41.170:22"), SchedulerKind::Wlc);
    vec![
        sstat(
            web,
            vec![
                rstat(real("211.238.41.166:80", 100, Forward::Route), 0, 0, 0),
                rstat(real("211.238.41.165:80", 100, Forward::Route), 0, 0, 0),
            ],
        ),
        sstat(
            ssh,
            vec![rstat(real("211.238.41.165:22", 1, Forward::Route), 0, 0, 0)],
        ),
    ]
}

/// A table with every feature the listings show, in the kernel's (unsorted) order.
fn table() -> Vec<ServiceStatus> {
    let big_stats = stats([
        123_456_789,
        99_999_999,
        1_000_000_000,
        123_456_789_012_345,
        99_999_999_999_999,
    ]);
    let big_rates = rates([1, 2, 3, 123_456_789, 1_234_567_890]);

    let mut dns = sstat(spec(udp("10.0.0.1:53"), SchedulerKind::Rr), vec![]);
    let mut r = rstat(real("10.0.1.2:53", 5, Forward::Masq), 1, 2, 0);
    r.stats = stats([5, 10, 20, 3000, 4000]);
    r.rates = rates([1, 2, 3, 4, 5]);
    dns.reals.push(r);
    dns.stats = stats([5, 10, 20, 3000, 4000]);
    dns.rates = rates([1, 2, 3, 4, 5]);

    let web_spec = flags(
        persistent(spec(tcp("200.0.0.1:80"), SchedulerKind::Sh), 300, 24),
        true,
        true,
    );
    let mut web = sstat(web_spec, vec![]);
    let mut r = rstat(
        thresholds(real("200.0.0.3:8080", 0, Forward::Masq), 100, 75),
        12,
        34,
        5,
    );
    r.stats = big_stats;
    r.rates = big_rates;
    web.reals.push(r);
    web.reals
        .push(rstat(real("10.0.0.9:80", 65535, Forward::Tunnel), 0, 0, 0));
    web.reals
        .push(rstat(real("200.0.0.2:80", 1, Forward::Route), 0, 0, 0));
    web.stats = big_stats;
    web.rates = big_rates;

    let mh = sstat(
        flags(spec(tcp("10.0.0.1:80"), SchedulerKind::Mh), true, false),
        vec![],
    );

    let mut v6 = sstat(
        persistent(spec(tcp("[2001:db8::1]:443"), SchedulerKind::Wlc), 3600, 64),
        vec![
            rstat(real("[2001:db8::10]:443", 1, Forward::Masq), 0, 0, 0),
            rstat(real("[::ffff:1.2.3.4]:443", 2, Forward::Masq), 0, 0, 0),
        ],
    );
    v6.stats = stats([1, 2, 3, 4, 5]);
    v6.rates = rates([6, 7, 8, 9, 10]);

    let v6dns = sstat(spec(udp("[2001:db8::1]:53"), SchedulerKind::Wrr), vec![]);
    let lo = sstat(spec(tcp("[::1]:80"), SchedulerKind::Lc), vec![]);
    vec![dns, web, mh, v6, v6dns, lo]
}

fn conns() -> Vec<ConnEntry> {
    let c = |protocol, expire_secs, state: &str, client: &str, virt: &str, real: &str| ConnEntry {
        protocol,
        expire_secs,
        state: state.to_string(),
        client: sa(client),
        virtual_addr: sa(virt),
        real: sa(real),
    };
    vec![
        c(
            Protocol::Tcp,
            895,
            "ESTABLISHED",
            "10.0.0.100:50000",
            "200.0.0.1:80",
            "200.0.0.3:8080",
        ),
        c(
            Protocol::Udp,
            299,
            "UDP",
            "10.0.0.100:4660",
            "10.0.0.1:53",
            "10.0.1.2:53",
        ),
        c(
            Protocol::Tcp,
            6000,
            "NONE",
            "10.0.0.100:0",
            "200.0.0.1:80",
            "200.0.0.3:8080",
        ),
        c(
            Protocol::Tcp,
            59,
            "FIN_WAIT",
            "[2001:db8::99]:50000",
            "[2001:db8::1]:443",
            "[2001:db8::10]:443",
        ),
    ]
}

/// Debian's /etc/services lines for the ports used, and host names for a few addresses.
fn names() -> HostTables {
    let mut t = HostTables::new();
    t.add_services(
        "# comment\n\
         ssh\t\t22/tcp\t\t\t\t# SSH Remote Login Protocol\n\
         domain\t\t53/tcp\n\
         domain\t\t53/udp\n\
         http\t\t80/tcp\t\twww\t\t# WorldWideWeb HTTP\n\
         https\t\t443/tcp\n\
         https\t\t443/udp\n\
         http-alt\t8080/tcp\twebcache\t# WWW caching service\n",
    );
    t.add_hosts(
        "127.0.0.1 localhost\n\
         10.0.0.9 a-very-long-host-name-for-testing.example.com\n\
         200.0.0.1 frontend-virtual-service.example.org frontend\n\
         2001:db8::10 v6host.example\n\
         2001:db8::1 v6-frontend.example\n",
    );
    t
}

fn list_opts(f: impl FnOnce(&mut ListOptions)) -> ListOptions {
    let mut o = ListOptions::default();
    f(&mut o);
    o
}

// ---------------------------------------------------------------------------------------------
// Parsing.

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// What a command line should give: a command, or ipvsadm's message and exit code.
enum Want {
    Cmd(Command),
    Err(&'static str, i32),
}

fn check(line: &str, want: Want) {
    check_with(line, want, &NumericOnly);
}

fn check_with(line: &str, want: Want, resolver: &dyn Resolver) {
    let got = parse_args_with(&args(line), resolver);
    match (want, got) {
        (Want::Cmd(w), Ok(g)) => assert_eq!(g, w, "ipvsadm {line}"),
        (Want::Err(msg, code), Err(e)) => {
            assert_eq!(
                (e.message.as_str(), e.exit_code()),
                (msg, code),
                "ipvsadm {line}"
            )
        }
        (Want::Cmd(w), Err(e)) => panic!("ipvsadm {line}: want {w:?}, got error {e:?}"),
        (Want::Err(msg, _), Ok(g)) => panic!("ipvsadm {line}: want error {msg:?}, got {g:?}"),
    }
}

fn add_real(service: ServiceKey, real: RealSpec) -> Want {
    Want::Cmd(Command::AddReal { service, real })
}

fn list(f: impl FnOnce(&mut ListOptions)) -> Want {
    Want::Cmd(Command::List(list_opts(f)))
}

#[test]
fn seed_command_lines() {
    use Want::Cmd;
    // Seed 001.
    let vs = tcp("211.238.41.170:80");
    check(
        "-A -t 211.238.41.170:80 -s wlc -p 360",
        Cmd(Command::AddService(persistent(
            spec(vs, SchedulerKind::Wlc),
            360,
            32,
        ))),
    );
    check(
        "-a -t 211.238.41.170:80 -r 211.238.41.165 -g -w 100",
        add_real(vs, real("211.238.41.165:80", 100, Forward::Route)),
    );
    check(
        "-a -t 211.238.41.170:80 -r 211.238.41.166 -g -w 100",
        add_real(vs, real("211.238.41.166:80", 100, Forward::Route)),
    );
    check(
        "-A -t 211.238.41.170:80 -s wlc",
        Cmd(Command::AddService(spec(vs, SchedulerKind::Wlc))),
    );
    check(
        "-A -t 211.238.41.170:22 -s wlc",
        Cmd(Command::AddService(spec(
            tcp("211.238.41.170:22"),
            SchedulerKind::Wlc,
        ))),
    );
    check(
        "-a -t 211.238.41.170:22 -r 211.238.41.165 -g",
        add_real(
            tcp("211.238.41.170:22"),
            real("211.238.41.165:22", 1, Forward::Route),
        ),
    );
    check(
        "-a -t 211.238.41.170:80 -r 211.238.41.165:80 -g -w 100",
        add_real(vs, real("211.238.41.165:80", 100, Forward::Route)),
    );
    // lvs.alert: "-d -t $virtual_service -r $remote" and "-a -t|-u $vs -r $remote -w $w $fwd".
    check(
        "-d -t 211.238.41.170:80 -r 211.238.41.166:80",
        Cmd(Command::DeleteReal {
            service: vs,
            address: sa("211.238.41.166:80"),
        }),
    );
    check(
        "-a -t 211.238.41.170:80 -r 211.238.41.166:80 -w 100 -g",
        add_real(vs, real("211.238.41.166:80", 100, Forward::Route)),
    );
    check(
        "-a -u 211.238.41.170:53 -r 211.238.41.166 -w 5 -m",
        add_real(
            udp("211.238.41.170:53"),
            real("211.238.41.166:53", 5, Forward::Masq),
        ),
    );
    check(
        "-a -t 211.238.41.170:80 -r 211.238.41.166:80 -w 2 -i",
        add_real(vs, real("211.238.41.166:80", 2, Forward::Tunnel)),
    );
    check("-C", Cmd(Command::Clear));
    check("", Cmd(Command::List(ListOptions::default())));

    // Seed 004: `-R ADDR` for the real server and a bare `w N` for the weight.
    let vs4 = tcp("123.123.123.1:80");
    check(
        "-A -t 123.123.123.1:80 -s wlc",
        Cmd(Command::AddService(spec(vs4, SchedulerKind::Wlc))),
    );
    check(
        "-a -t 123.123.123.1:80 -R 192.168.0.2 -g w 1",
        add_real(vs4, real("192.168.0.2:80", 1, Forward::Route)),
    );
    check(
        "-a -t 123.123.123.1:80 -R 192.168.0.3 -g w 2",
        add_real(vs4, real("192.168.0.3:80", 2, Forward::Route)),
    );
    check(
        "-a -t 123.123.123.1:80 -R 192.168.0.4 -g w 3",
        add_real(vs4, real("192.168.0.4:80", 3, Forward::Route)),
    );
    check(
        "-e -t 123.123.123.1:80 -R 192.168.0.4:8080 w 0 -m",
        Cmd(Command::EditReal {
            service: vs4,
            real: real("192.168.0.4:8080", 0, Forward::Masq),
        }),
    );
    check(
        "-d -t 123.123.123.1:80 -R 192.168.0.4",
        Cmd(Command::DeleteReal {
            service: vs4,
            address: sa("192.168.0.4:80"),
        }),
    );
    // Only there: elsewhere -R is the restore command, and `w` an argument.
    check("-R", Cmd(Command::Restore));
    check("-L -R 1.2.3.4", Want::Err("invalid option `-R'", 2));
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -R",
        Want::Err("invalid option `-R'", 2),
    );
    check(
        "-A -t 1.2.3.4:80 w 1",
        Want::Err("unexpected argument w", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -R 1.1.1.1 -r 1.1.1.2",
        Want::Err("multiple 'real-server' options specified", 2),
    );
}

#[test]
fn services() {
    use Want::Cmd;
    let k = tcp("1.2.3.4:80");
    let add = |s: ServiceSpec| Cmd(Command::AddService(s));
    check("-A -t 1.2.3.4:80", add(spec(k, SchedulerKind::Wlc)));
    check("-A -t 1.2.3.4:80 -s rr", add(spec(k, SchedulerKind::Rr)));
    check(
        "-A -t 1.2.3.4:80 -s twos",
        add(spec(k, SchedulerKind::Twos)),
    );
    check(
        "-A -t 1.2.3.4:80 -s=lblcr",
        add(spec(k, SchedulerKind::Lblcr)),
    );
    // `-p` without a value means 360 seconds (libipvs' IPVS_SVC_PERSISTENT_TIMEOUT).
    check(
        "-A -t 1.2.3.4:80 -p",
        add(persistent(spec(k, SchedulerKind::Wlc), 360, 32)),
    );
    check(
        "-A -t 1.2.3.4:80 -p -s rr",
        add(persistent(spec(k, SchedulerKind::Rr), 360, 32)),
    );
    check(
        "-A -t 1.2.3.4:80 -p 1000",
        add(persistent(spec(k, SchedulerKind::Wlc), 1000, 32)),
    );
    check(
        "-A -t 1.2.3.4:80 -p100",
        add(persistent(spec(k, SchedulerKind::Wlc), 100, 32)),
    );
    check(
        "-A -t 1.2.3.4:80 -p=5",
        add(persistent(spec(k, SchedulerKind::Wlc), 5, 32)),
    );
    check(
        "-A -t 1.2.3.4:80 -p 2678400",
        add(persistent(spec(k, SchedulerKind::Wlc), 2678400, 32)),
    );
    check(
        "-A -t 1.2.3.4:80 -p 60 -M 255.255.255.0",
        add(persistent(spec(k, SchedulerKind::Wlc), 60, 24)),
    );
    check(
        "-A -t 1.2.3.4:80 -p -M 0.0.0.0",
        add(persistent(spec(k, SchedulerKind::Wlc), 360, 0)),
    );
    // -M without -p is accepted and has no effect.
    check(
        "-A -t 1.2.3.4:80 -M 255.255.0.0",
        add(spec(k, SchedulerKind::Wlc)),
    );
    // Port zero needs persistence.
    check(
        "-A -t 1.2.3.4:0 -p",
        add(persistent(
            spec(tcp("1.2.3.4:0"), SchedulerKind::Wlc),
            360,
            32,
        )),
    );
    check(
        "-A -t 1.2.3.4 -p 10",
        add(persistent(
            spec(tcp("1.2.3.4:0"), SchedulerKind::Wlc),
            10,
            32,
        )),
    );
    check(
        "-A -u 1.2.3.4:53",
        add(spec(udp("1.2.3.4:53"), SchedulerKind::Wlc)),
    );
    // inet_aton forms.
    check(
        "-A -t 127.1:80",
        add(spec(tcp("127.0.0.1:80"), SchedulerKind::Wlc)),
    );
    check(
        "-A -t 0x7f000001:80",
        add(spec(tcp("127.0.0.1:80"), SchedulerKind::Wlc)),
    );
    // Scheduler flags.
    check(
        "-A -t 1.2.3.4:80 -s sh -b sh-fallback,sh-port",
        add(flags(spec(k, SchedulerKind::Sh), true, true)),
    );
    check(
        "-A -t 1.2.3.4:80 -s mh -b mh-port",
        add(flags(spec(k, SchedulerKind::Mh), false, true)),
    );
    check(
        "-A -t 1.2.3.4:80 -s rr -b flag-1",
        add(flags(spec(k, SchedulerKind::Rr), true, false)),
    );
    check(
        "-A -t 1.2.3.4:80 -s sh -b flag-2",
        add(flags(spec(k, SchedulerKind::Sh), false, true)),
    );
    check(
        "-A -t 1.2.3.4:80 -s sh -b",
        Want::Err("-b: missing argument", 255),
    );
    // An empty scheduler is the default one.
    check_args(
        &["-A", "-t", "1.2.3.4:80", "-s", ""],
        add(spec(k, SchedulerKind::Wlc)),
    );
    check_args(
        &["-A", "-t", "1.2.3.4:80", "-s", "sh", "-b", ""],
        add(spec(k, SchedulerKind::Sh)),
    );
    // Long options, with and without `=`.
    check(
        "--add-service --tcp-service 1.2.3.4:80 --scheduler rr --persistent 100 --netmask 255.255.255.0",
        add(persistent(spec(k, SchedulerKind::Rr), 100, 24)),
    );
    check(
        "--add-service --tcp-service=1.2.3.4:80 --persistent=100 --sched-flags=flag-2",
        add(flags(
            persistent(spec(k, SchedulerKind::Wlc), 100, 32),
            false,
            true,
        )),
    );
    check("-At 1.2.3.4:80", add(spec(k, SchedulerKind::Wlc)));
    check(
        "-A -t1.2.3.4:80 -p360",
        add(persistent(spec(k, SchedulerKind::Wlc), 360, 32)),
    );
    // Edit replaces with what is given and the defaults for the rest.
    check(
        "-E -t 1.2.3.4:80",
        Cmd(Command::EditService(spec(k, SchedulerKind::Wlc))),
    );
    check(
        "--edit-service -t 1.2.3.4:80 -s sed -p 20",
        Cmd(Command::EditService(persistent(
            spec(k, SchedulerKind::Sed),
            20,
            32,
        ))),
    );
    check("-D -t 1.2.3.4:80", Cmd(Command::DeleteService(k)));
    check(
        "--delete-service --udp-service 1.2.3.4:53",
        Cmd(Command::DeleteService(udp("1.2.3.4:53"))),
    );
    check(
        "-D -t 1.2.3.4",
        Cmd(Command::DeleteService(tcp("1.2.3.4:0"))),
    );
    check("--clear", Cmd(Command::Clear));
}

fn check_args(a: &[&str], want: Want) {
    let line: Vec<String> = a.iter().map(|s| s.to_string()).collect();
    match (want, parse_args(&line)) {
        (Want::Cmd(w), Ok(g)) => assert_eq!(g, w, "{a:?}"),
        (Want::Err(msg, code), Err(e)) => {
            assert_eq!((e.message.as_str(), e.exit_code()), (msg, code))
        }
        (_, g) => panic!("{a:?}: unexpected {g:?}"),
    }
}

#[test]
fn real_servers() {
    use Want::Cmd;
    let k = tcp("1.2.3.4:80");
    check(
        "-a -t 1.2.3.4:80 -r 5.6.7.8",
        add_real(k, real("5.6.7.8:80", 1, Forward::Route)),
    );
    // A port given is kept, whatever the method.
    check(
        "-a -t 1.2.3.4:80 -r 5.6.7.8:8080",
        add_real(k, real("5.6.7.8:8080", 1, Forward::Route)),
    );
    check(
        "-a -t 1.2.3.4:80 -r 5.6.7.8:0 -m",
        add_real(k, real("5.6.7.8:0", 1, Forward::Masq)),
    );
    check(
        "-a -t 1.2.3.4:80 -r 5.6.7.8 -w 0",
        add_real(k, real("5.6.7.8:80", 0, Forward::Route)),
    );
    check(
        "-a -t 1.2.3.4:80 -r 5.6.7.8 -w 65535",
        add_real(k, real("5.6.7.8:80", 65535, Forward::Route)),
    );
    check(
        "-a -t 1.2.3.4:80 -r 5.6.7.8 -w +7",
        add_real(k, real("5.6.7.8:80", 7, Forward::Route)),
    );
    check_args(
        &["-a", "-t", "1.2.3.4:80", "-r", "5.6.7.8", "-w", " 7"],
        add_real(k, real("5.6.7.8:80", 7, Forward::Route)),
    );
    check(
        "-a -t 1.2.3.4:80 -r 5.6.7.8 -x 100 -y 50",
        add_real(
            k,
            thresholds(real("5.6.7.8:80", 1, Forward::Route), 100, 50),
        ),
    );
    check(
        "--add-server --udp-service=1.2.3.4:53 --real-server=5.6.7.8 --masquerading --weight=3 \
         --u-threshold 10 --l-threshold 5",
        add_real(
            udp("1.2.3.4:53"),
            thresholds(real("5.6.7.8:53", 3, Forward::Masq), 10, 5),
        ),
    );
    check(
        "-a -t 1.2.3.4:80 -r 5.6.7.8 --ipip",
        add_real(k, real("5.6.7.8:80", 1, Forward::Tunnel)),
    );
    check(
        "-a -t 1.2.3.4:80 -r 5.6.7.8 -i --tun-type ipip",
        add_real(k, real("5.6.7.8:80", 1, Forward::Tunnel)),
    );
    check(
        "-a -t 1.2.3.4:80 -r 5.6.7.8 --gatewaying",
        add_real(k, real("5.6.7.8:80", 1, Forward::Route)),
    );
    check(
        "-e -t 1.2.3.4:80 -r 5.6.7.8:8080 -w 0 -m -x 100 -y 50",
        Cmd(Command::EditReal {
            service: k,
            real: thresholds(real("5.6.7.8:8080", 0, Forward::Masq), 100, 50),
        }),
    );
    check(
        "--edit-server -t 1.2.3.4:80 -r 5.6.7.8",
        Cmd(Command::EditReal {
            service: k,
            real: real("5.6.7.8:80", 1, Forward::Route),
        }),
    );
    check(
        "--delete-server -t 1.2.3.4:80 --real-server 5.6.7.8:81",
        Cmd(Command::DeleteReal {
            service: k,
            address: sa("5.6.7.8:81"),
        }),
    );
    // The real server may come first; without a port it takes the service's.
    check(
        "-a -r 5.6.7.8 -t 1.2.3.4:80",
        add_real(k, real("5.6.7.8:80", 1, Forward::Route)),
    );
}

#[test]
fn ipv6() {
    use Want::Cmd;
    let k = tcp("[2001:db8::1]:443");
    check(
        "-A -t [2001:db8::1]:443 -s rr -p 60 -M 64",
        Cmd(Command::AddService(persistent(
            spec(k, SchedulerKind::Rr),
            60,
            64,
        ))),
    );
    check(
        "-A -t [2001:db8::1]:443 -p",
        Cmd(Command::AddService(persistent(
            spec(k, SchedulerKind::Wlc),
            360,
            128,
        ))),
    );
    // -M before -t is read as an IPv4 mask, then reset by the IPv6 address.
    check(
        "-A -M 255.255.255.0 -t [2001:db8::1]:443 -p",
        Cmd(Command::AddService(persistent(
            spec(k, SchedulerKind::Wlc),
            360,
            128,
        ))),
    );
    check(
        "-a -t [2001:db8::1]:443 -r 2001:db8::10",
        add_real(k, real("[2001:db8::10]:443", 1, Forward::Route)),
    );
    check(
        "-a -t [2001:db8::1]:443 -r [2001:db8::10]:8443 -m",
        add_real(k, real("[2001:db8::10]:8443", 1, Forward::Masq)),
    );
    // Only tunnels may change the family.
    check(
        "-a -t [::1]:80 -r 1.1.1.1 -i",
        add_real(tcp("[::1]:80"), real("1.1.1.1:80", 1, Forward::Tunnel)),
    );
    // A bare IPv6 address with a colon and digits at the end is an address, not a port.
    check(
        "-A -t ::1:80",
        Want::Err("Zero port specified for non-persistent service", 2),
    );
    check(
        "-L -n -t [::1]:80",
        list(|o| {
            o.numeric = true;
            o.service = Some(tcp("[::1]:80"));
        }),
    );
    check(
        "-A -t [::1]",
        Want::Err("illegal virtual server address[:port] specified", 2),
    );
    check(
        "-A -t [::1]80",
        Want::Err("illegal virtual server address[:port] specified", 2),
    );
    check(
        "-A -t [::1]:80 -p -M 0",
        Want::Err("illegal ipv6 netmask specified", 2),
    );
    check(
        "-A -t [::1]:80 -p -M 129",
        Want::Err("illegal ipv6 netmask specified", 2),
    );
    check(
        "-A -t [::1]:80 -p -M 255.255.255.0",
        Want::Err("illegal ipv6 netmask specified", 2),
    );
    check(
        "-a -t [::1]:80 -r 1.1.1.1",
        Want::Err(
            "Different address family is allowed only for tunneling servers",
            2,
        ),
    );
    check(
        "-a -t 1.2.3.4:80 -r ::1",
        Want::Err(
            "Different address family is allowed only for tunneling servers",
            2,
        ),
    );
    check(
        "-a -t 1.2.3.4:80 -r ::1 -m",
        Want::Err(
            "Different address family is allowed only for tunneling servers",
            2,
        ),
    );
}

#[test]
fn listing_options() {
    use Want::Cmd;
    check("-L", list(|_| {}));
    check("-l", list(|_| {}));
    check("--list", list(|_| {}));
    check("-Ln", list(|o| o.numeric = true));
    check("-L -n", list(|o| o.numeric = true));
    check("-L --numeric", list(|o| o.numeric = true));
    check(
        "-Lnc",
        list(|o| {
            o.numeric = true;
            o.connections = true;
        }),
    );
    check(
        "-L -c --persistent-conn",
        list(|o| {
            o.connections = true;
            o.persistent_conn = true;
        }),
    );
    check("-L --connection", list(|o| o.connections = true));
    check("-L --timeout", list(|o| o.timeout = true));
    check("-L --daemon", list(|o| o.daemon = true));
    check(
        "-L -n --stats",
        list(|o| {
            o.numeric = true;
            o.stats = true;
        }),
    );
    check(
        "-L --rate --exact",
        list(|o| {
            o.rate = true;
            o.exact = true;
        }),
    );
    check(
        "-L -X --stats --rate",
        list(|o| {
            o.exact = true;
            o.stats = true;
            o.rate = true;
        }),
    );
    check("-L --thresholds", list(|o| o.thresholds = true));
    check("-L --persistent-conn", list(|o| o.persistent_conn = true));
    check("-L --tun-info", list(|o| o.tun_info = true));
    check("-L --nosort", list(|o| o.sort = false));
    check("-L --sort --sort", list(|_| {}));
    check(
        "-L -t 1.2.3.4:80 --stats",
        list(|o| {
            o.service = Some(tcp("1.2.3.4:80"));
            o.stats = true;
        }),
    );
    check(
        "-L -u 1.2.3.4",
        list(|o| o.service = Some(udp("1.2.3.4:0"))),
    );
    check("-S", Cmd(Command::Save { numeric: false }));
    check("-S -n", Cmd(Command::Save { numeric: true }));
    check("--save --numeric", Cmd(Command::Save { numeric: true }));
    check("-Sn", Cmd(Command::Save { numeric: true }));
    check("-Z", Cmd(Command::Zero { service: None }));
    check(
        "--zero -t 1.2.3.4:80",
        Cmd(Command::Zero {
            service: Some(tcp("1.2.3.4:80")),
        }),
    );
    check("--restore", Cmd(Command::Restore));
    check(
        "--set 900 120 300",
        Cmd(Command::SetTimeouts(Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        })),
    );
    check(
        "--set 0 0 2678400",
        Cmd(Command::SetTimeouts(Timeouts {
            tcp: 0,
            tcp_fin: 0,
            udp: 2678400,
        })),
    );
    check("-h", Cmd(Command::Help));
    check("--help", Cmd(Command::Help));
    check("-h -A", Cmd(Command::Help));
    check("--help -C --foo", Cmd(Command::Help));
    check("-v", Cmd(Command::Version));
    check("--version", Cmd(Command::Version));
    // Non-option arguments before the command are left over.
    check("foo -L", Want::Err("unexpected argument foo", 2));

    assert_eq!(list_opts(|_| {}).view(), ListView::Services);
    assert_eq!(
        list_opts(|o| o.connections = true).view(),
        ListView::Connections
    );
    assert_eq!(list_opts(|o| o.timeout = true).view(), ListView::Timeout);
    assert_eq!(list_opts(|o| o.daemon = true).view(), ListView::Daemon);
}

#[test]
fn usage_errors() {
    use Want::Err;
    let try_help = "Try `herd ipvsadm -h' or 'herd ipvsadm --help' for more information.";
    // popt: no command first, unknown options, missing or unwanted arguments (exit 255).
    check("-r 1.1.1.1", Err(try_help, 255));
    check("-t 1.2.3.4:80 -A", Err(try_help, 255));
    check("-nL", Err(try_help, 255));
    check("--foo", Err(try_help, 255));
    check("--lis", Err(try_help, 255));
    check("--list=1", Err(try_help, 255));
    check("-V", Err(try_help, 255));
    check_args(&[""], Err(try_help, 255));
    check("-L --foo", Err("--foo: unknown option", 255));
    check("-L --foo=bar", Err("--foo=bar: unknown option", 255));
    check("-L -Q", Err("-Q: unknown option", 255));
    check("-LQ", Err("-LQ: unknown option", 255));
    check("-L -nQ", Err("-nQ: unknown option", 255));
    check("-L --t", Err("--t: unknown option", 255));
    check("-A -t 1.2.3.4:80 -p -1", Err("-1: unknown option", 255));
    check("-A -t", Err("-t: missing argument", 255));
    check(
        "-A --tcp-service",
        Err("--tcp-service: missing argument", 255),
    );
    check("-A -t 1.2.3.4:80 -s", Err("-s: missing argument", 255));
    check(
        "-L --numeric=1",
        Err("--numeric=1: option does not take an argument", 255),
    );
    check(
        "-L --stats=",
        Err("--stats=: option does not take an argument", 255),
    );

    // Commands after the first are invalid options.
    check("-A -C", Err("invalid option `-C'", 2));
    check("-LC", Err("invalid option `-LC'", 2));
    check("-C --help", Err("invalid option `--help'", 2));
    check("-A -h", Err("invalid option `-h'", 2));
    check("-L --set", Err("invalid option `--set'", 2));
    check("-L -S", Err("invalid option `-S'", 2));

    // Compulsory and illegal options.
    check(
        "-A",
        Err(
            "You need to supply the 'service-address' option for the 'add-service' command",
            2,
        ),
    );
    check(
        "-E",
        Err(
            "You need to supply the 'service-address' option for the 'edit-service' command",
            2,
        ),
    );
    check(
        "-D",
        Err(
            "You need to supply the 'service-address' option for the 'delete-service' command",
            2,
        ),
    );
    check(
        "-A -r 1.2.3.4",
        Err(
            "You need to supply the 'service-address' option for the 'add-service' command",
            2,
        ),
    );
    check(
        "-a -t 1.2.3.4:80",
        Err(
            "You need to supply the 'real-server' option for the 'add-server' command",
            2,
        ),
    );
    check(
        "-e -t 1.2.3.4:80",
        Err(
            "You need to supply the 'real-server' option for the 'edit-server' command",
            2,
        ),
    );
    check(
        "-d -t 1.2.3.4:80",
        Err(
            "You need to supply the 'real-server' option for the 'delete-server' command",
            2,
        ),
    );
    check(
        "-a -r 1.1.1.1",
        Err(
            "You need to supply the 'service-address' option for the 'add-server' command",
            2,
        ),
    );
    check(
        "-A -t 1.2.3.4:80 -r 1.2.3.5",
        Err(
            "Illegal 'real-server' option with the 'add-service' command",
            2,
        ),
    );
    check(
        "-A -t 1.2.3.4:80 -w 3",
        Err("Illegal 'weight' option with the 'add-service' command", 2),
    );
    check(
        "-A -t 1.2.3.4:80 -m",
        Err(
            "Illegal 'forwarding-method' option with the 'add-service' command",
            2,
        ),
    );
    check(
        "-d -t 1.2.3.4:80 -r 1.2.3.5 -w 3",
        Err(
            "Illegal 'weight' option with the 'delete-server' command",
            2,
        ),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.2.3.5 -s rr",
        Err(
            "Illegal 'scheduler' option with the 'add-server' command",
            2,
        ),
    );
    check(
        "-C -n",
        Err("Illegal 'numeric' option with the 'flush' command", 2),
    );
    check(
        "-S -t 1.2.3.4:80",
        Err(
            "Illegal 'service-address' option with the 'save' command",
            2,
        ),
    );
    check(
        "-S --stats",
        Err("Illegal 'stats' option with the 'save' command", 2),
    );
    check(
        "-Z -t 1.2.3.4:80 -n",
        Err("Illegal 'numeric' option with the 'zero' command", 2),
    );
    check(
        "-R -n",
        Err("Illegal 'numeric' option with the 'restore' command", 2),
    );
    check(
        "--set 1 -n 2 3",
        Err("Illegal 'numeric' option with the 'set' command", 2),
    );
    check(
        "-L -s rr",
        Err("Illegal 'scheduler' option with the 'list' command", 2),
    );
    check(
        "-list",
        Err("Illegal 'scheduler' option with the 'list' command", 2),
    );
    check(
        "-L -b sh-port",
        Err("incompatible scheduler flag `sh-port'", 2),
    );
    check(
        "-L -c --timeout",
        Err(
            "The option 'timeout' conflicts with the 'connection' option in the 'list' command",
            2,
        ),
    );
    check("-L -n -t 1.2.3.4:80 -c", Err("The option 'service-address' conflicts with the 'connection' option in the 'list' command", 2));
    check("-L -t 1.2.3.4:80 --timeout", Err("The option 'timeout' conflicts with the 'service-address' option in the 'list' command", 2));
    check(
        "-L -c --stats",
        Err("options conflicts in the list command", 2),
    );
    check(
        "-L --daemon --thresholds",
        Err("options conflicts in the list command", 2),
    );
    check(
        "-L --timeout --persistent-conn",
        Err("options conflicts in the list command", 2),
    );

    // Each option once.
    check("-L -n -n", Err("multiple 'numeric' options specified", 2));
    check(
        "-A -t 1.2.3.4:80 -t 1.2.3.4:81",
        Err("multiple 'service-address' options specified", 2),
    );
    check(
        "-A -t 1.2.3.4:80 -u 1.2.3.4:80",
        Err("multiple 'service-address' options specified", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.2.3.5 -g -m",
        Err("multiple 'forwarding-method' options specified", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 5.6.7.8 -w 70000 -w 3",
        Err("illegal weight specified", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 5.6.7.8 -w 7 -w 3",
        Err("multiple 'weight' options specified", 2),
    );
    check(
        "-L --nosort --nosort",
        Err("multiple 'nosort' options specified", 2),
    );

    // Values.
    check(
        "-A -t 1.2.3.4",
        Err("Zero port specified for non-persistent service", 2),
    );
    check(
        "-E -t 1.2.3.4:0",
        Err("Zero port specified for non-persistent service", 2),
    );
    check(
        "-A -t 1.2.3.4:65536",
        Err("illegal virtual server address[:port] specified", 2),
    );
    check(
        "-A -t 1.2.3.4:",
        Err("illegal virtual server address[:port] specified", 2),
    );
    check(
        "-A -t 1.2.3.4:-1",
        Err("illegal virtual server address[:port] specified", 2),
    );
    check(
        "-A -t 80",
        Err("illegal virtual server address[:port] specified", 2),
    );
    check(
        "-A -t web:80",
        Err("illegal virtual server address[:port] specified", 2),
    );
    check(
        "-A -t 1.2.3.4:http",
        Err("illegal virtual server address[:port] specified", 2),
    );
    check(
        "-A -t 1.2.3.256:80",
        Err("illegal virtual server address[:port] specified", 2),
    );
    check(
        "-A -t 1.2.3.4.5:80",
        Err("illegal virtual server address[:port] specified", 2),
    );
    check(
        "-A -t [1.2.3.4]:80",
        Err("Zero port specified for non-persistent service", 2),
    );
    check_args(
        &["-A", "--tcp-service=", "-s", "rr"],
        Err("illegal virtual server address[:port] specified", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1.1",
        Err("illegal real server address[:port] specified", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1:x",
        Err("illegal real server address[:port] specified", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -w 65536",
        Err("illegal weight specified", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -w -1",
        Err("illegal weight specified", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -w 1x",
        Err("illegal weight specified", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 w x",
        Err("illegal weight specified", 2),
    );
    check_args(
        &["-a", "-t", "1.2.3.4:80", "-r", "1.1.1.1", "-w", ""],
        Err("illegal weight specified", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -x 65536",
        Err("illegal u_threshold specified", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -y x",
        Err("illegal l_threshold specified", 2),
    );
    check(
        "-A -t 1.2.3.4:80 -p 0",
        Err("invalid timeout value `0' specified", 2),
    );
    check(
        "-A -t 1.2.3.4:80 -p abc",
        Err("invalid timeout value `abc' specified", 2),
    );
    check(
        "-A -t 1.2.3.4:80 -p 2678401",
        Err("invalid timeout value `2678401' specified", 2),
    );
    check(
        "-A -t 1.2.3.4:80 -pn",
        Err("invalid timeout value `n' specified", 2),
    );
    check_args(
        &["-A", "-t", "1.2.3.4:80", "-p", ""],
        Err("invalid timeout value `' specified", 2),
    );
    check(
        "-A -t 1.2.3.4:80 --persistent= ",
        Err("invalid timeout value `' specified", 2),
    );
    check(
        "-A -t 1.2.3.4:80 -p -M 255.0.255.0",
        Err("illegal virtual server persistent mask specified", 2),
    );
    check(
        "-A -t 1.2.3.4:80 -p -M 24",
        Err("illegal virtual server persistent mask specified", 2),
    );
    check(
        "-A -t 1.2.3.4:80 -p -M x",
        Err("illegal virtual server persistent mask specified", 2),
    );
    check(
        "--set 1 2",
        Err("--set option requires 3 timeout values", 2),
    );
    check("--set", Err("--set option requires 3 timeout values", 2));
    check("--set 1 2 3 4", Err("unexpected argument 4", 2));
    check("--set 1 2 x", Err("invalid timeout value `x' specified", 2));
    check("--set 1 -2 3", Err("-2: unknown option", 255));
    check(
        "--set 1 2 2678401",
        Err("invalid timeout value `2678401' specified", 2),
    );
    check(
        "-A -t 1.2.3.4:80 extra",
        Err("unexpected argument extra", 2),
    );
    check(
        "-Z -t 1.2.3.4:80 extra",
        Err("unexpected argument extra", 2),
    );
    check("-R x", Err("unexpected argument x", 2));
    check("-L -", Err("unexpected argument -", 2));
    check("-A -t 1.2.3.4:80 -- -s", Err("unexpected argument -s", 2));

    // Scheduler flags.
    check(
        "-A -t 1.2.3.4:80 -b sh-port",
        Err("incompatible scheduler flag `sh-port'", 2),
    );
    check(
        "-A -t 1.2.3.4:80 -s mh -b sh-fallback",
        Err("incompatible scheduler flag `sh-fallback'", 2),
    );
    check(
        "-A -t 1.2.3.4:80 -s sh -b mh-port",
        Err("incompatible scheduler flag `mh-port'", 2),
    );
    check(
        "-A -t 1.2.3.4:80 -s sh -b foo",
        Err("invalid scheduler flag `foo'", 2),
    );
    check(
        "-A -t 1.2.3.4:80 -s sh -b ,",
        Err("invalid scheduler flag `,'", 2),
    );

    // Refused by the kernel in ipvsadm: its message, exit 255.
    check(
        "-A -t 1.2.3.4:80 -s fastest",
        Err("Scheduler or persistence engine not found", 255),
    );
    check(
        "-E -t 1.2.3.4:80 -s -n",
        Err("Scheduler or persistence engine not found", 255),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -y 5",
        Err("Numerical result out of range", 255),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -x 5 -y 6",
        Err("Numerical result out of range", 255),
    );

    // Tunnels.
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 --tun-type ipip",
        Err("Tunnel options conflict with forward method", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -m --tun-nocsum",
        Err("Tunnel options conflict with forward method", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -i --tun-port 5",
        Err("Illegal 'tun-port' option with the 'ipip' tunnel type", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -i --tun-csum",
        Err("Illegal 'tun-csum' option with the 'ipip' tunnel type", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -i --tun-type foo",
        Err("illegal tunnel type specified", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -i --tun-port 0",
        Err("illegal tunnel port specified", 2),
    );
    check(
        "-A -t 1.2.3.4:80 --tun-info",
        Err(
            "Illegal 'tun-info' option with the 'add-service' command",
            2,
        ),
    );

    // What herd does not do.
    check("-A -t 1.2.3.4:80 -6", Err("-6 used before -f\n", 2));
    check(
        "-A -f 1",
        Err(
            "herd ipvsadm: firewall-mark services (-f, --fwmark-service) are not supported",
            2,
        ),
    );
    check(
        "-A --fwmark-service 1",
        Err(
            "herd ipvsadm: firewall-mark services (-f, --fwmark-service) are not supported",
            2,
        ),
    );
    check(
        "-A --sctp-service 1.2.3.4:80",
        Err(
            "herd ipvsadm: SCTP services (--sctp-service) are not supported",
            2,
        ),
    );
    check(
        "-A -u 1.2.3.4:53 -o",
        Err(
            "herd ipvsadm: one-packet scheduling (-o, --ops) is not supported",
            2,
        ),
    );
    check(
        "-A -t 1.2.3.4:80 --pe sip",
        Err(
            "herd ipvsadm: persistence engines (--pe) are not supported",
            2,
        ),
    );
    check(
        "-A -t 1.2.3.4:80 -s sh -b flag-3",
        Err("herd ipvsadm: scheduler flag `flag-3' is not supported", 2),
    );
    check(
        "-a -t 1.2.3.4:80 -r 1.1.1.1 -i --tun-type gue",
        Err(
            "herd ipvsadm: tunnel type `gue' (--tun-type) is not supported",
            2,
        ),
    );
    check(
        "--start-daemon master",
        Err("herd ipvsadm: the connection synchronization daemon (--start-daemon, --stop-daemon) is not supported", 2),
    );
    check("--start-daemon", Err(try_help, 255));
    check(
        "-L --syncid 3",
        Err(
            "herd ipvsadm: the connection synchronization daemon and its options are not supported",
            2,
        ),
    );
}

#[test]
fn usage_error_exit_codes() {
    let e = parse_args(&args("-A -t 1.2.3.4:80 -w 3")).unwrap_err();
    assert_eq!(
        (e.kind, usage_exit_code(&e), e.to_string().as_str()),
        (
            UsageErrorKind::Invalid,
            2,
            "Illegal 'weight' option with the 'add-service' command"
        )
    );
    assert_eq!(
        parse_args(&args("-X")).unwrap_err().kind,
        UsageErrorKind::TryHelp
    );
    assert_eq!(
        parse_args(&args("-L --x")).unwrap_err().kind,
        UsageErrorKind::BadOption
    );
    assert_eq!(
        parse_args(&args("-A -t 1.2.3.4:80 -s x")).unwrap_err().kind,
        UsageErrorKind::Rejected
    );
    assert_eq!(
        parse_args(&args("-A -f 1")).unwrap_err().kind,
        UsageErrorKind::Unsupported
    );
}

#[test]
fn names_in_arguments() {
    use Want::Cmd;
    let t = names();
    check_with(
        "-A -t localhost:http",
        Cmd(Command::AddService(spec(
            tcp("127.0.0.1:80"),
            SchedulerKind::Wlc,
        ))),
        &t,
    );
    check_with(
        "-a -t frontend:www -r localhost:webcache",
        add_real(
            tcp("200.0.0.1:80"),
            real("127.0.0.1:8080", 1, Forward::Route),
        ),
        &t,
    );
    check_with(
        "-A -u 1.2.3.4:domain",
        Cmd(Command::AddService(spec(
            udp("1.2.3.4:53"),
            SchedulerKind::Wlc,
        ))),
        &t,
    );
    check_with(
        "-A -t LOCALHOST:80",
        Cmd(Command::AddService(spec(
            tcp("127.0.0.1:80"),
            SchedulerKind::Wlc,
        ))),
        &t,
    );
    check_with(
        "-A -u 1.2.3.4:ssh",
        Want::Err("illegal virtual server address[:port] specified", 2),
        &t,
    );
    // Host names are IPv4 only, as with gethostbyname.
    check_with(
        "-A -t v6host.example:80",
        Want::Err("illegal virtual server address[:port] specified", 2),
        &t,
    );
    // A real server given before the service has no protocol for its port name.
    check_with(
        "-a -r 5.6.7.8:http -t 1.2.3.4:80",
        Want::Err("illegal real server address[:port] specified", 2),
        &t,
    );
}

// ---------------------------------------------------------------------------------------------
// Output.

#[test]
fn seed001_listing() {
    let t = seed001();
    let n = list_opts(|o| o.numeric = true);
    // Written out: the listing of seed 001's two services, as ipvsadm 1.31 sorts it (the seed's
    // own printout, from ipvsadm 1.21, did not sort).
    let expected = "IP Virtual Server version 1.2.1 (size=4096)\n\
                    Prot LocalAddress:Port Scheduler Flags\n\
                    \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
                    TCP  211.238.41.170:22 wlc\n\
                    \x20 -> 211.238.41.165:22            Route   1      0          0         \n\
                    TCP  211.238.41.170:80 wlc persistent 360\n\
                    \x20 -> 211.238.41.165:80            Route   100    0          0         \n\
                    \x20 -> 211.238.41.166:80            Route   100    0          0         \n";
    assert_eq!(format_list(&t, &n, &NumericOnly), expected);
    assert_eq!(format_list(&t, &n, &NumericOnly), text(SEED001_LN));
    assert_eq!(
        format_list(&t, &ListOptions::default(), &names()),
        text(SEED001_L)
    );
    assert_eq!(format_save(&t, false, &names()), text(SEED001_SAVE));
}

#[test]
fn listings_match_ipvsadm() {
    let t = table();
    let r = names();
    let cases: Vec<(&str, ListOptions, &dyn Resolver, &str)> = vec![
        ("-Ln", list_opts(|o| o.numeric = true), &NumericOnly, LN),
        (
            "-Ln --stats",
            list_opts(|o| {
                o.numeric = true;
                o.stats = true;
            }),
            &NumericOnly,
            LN_STATS,
        ),
        (
            "-Ln --rate",
            list_opts(|o| {
                o.numeric = true;
                o.rate = true;
            }),
            &NumericOnly,
            LN_RATE,
        ),
        (
            "-Ln --stats --exact",
            list_opts(|o| {
                o.numeric = true;
                o.stats = true;
                o.exact = true;
            }),
            &NumericOnly,
            LN_STATS_EXACT,
        ),
        (
            "-Ln --rate --exact",
            list_opts(|o| {
                o.numeric = true;
                o.rate = true;
                o.exact = true;
            }),
            &NumericOnly,
            LN_RATE_EXACT,
        ),
        (
            "-Ln --thresholds",
            list_opts(|o| {
                o.numeric = true;
                o.thresholds = true;
            }),
            &NumericOnly,
            LN_THRESHOLDS,
        ),
        (
            "-Ln --persistent-conn",
            list_opts(|o| {
                o.numeric = true;
                o.persistent_conn = true;
            }),
            &NumericOnly,
            LN_PERSISTENT,
        ),
        (
            "-Ln --tun-info",
            list_opts(|o| {
                o.numeric = true;
                o.tun_info = true;
            }),
            &NumericOnly,
            LN_TUN_INFO,
        ),
        (
            "-Ln --nosort",
            list_opts(|o| {
                o.numeric = true;
                o.sort = false;
            }),
            &NumericOnly,
            LN_NOSORT,
        ),
        ("-L", ListOptions::default(), &r, L_NAMES),
        (
            "-L --stats",
            list_opts(|o| o.stats = true),
            &r,
            L_STATS_NAMES,
        ),
        // --stats wins over --rate, as in ipvsadm.
        (
            "-Ln --stats --rate",
            list_opts(|o| {
                o.numeric = true;
                o.stats = true;
                o.rate = true;
            }),
            &NumericOnly,
            LN_STATS,
        ),
        // -n wins over names.
        ("-Ln (names known)", list_opts(|o| o.numeric = true), &r, LN),
    ];
    for (what, opts, resolver, want) in cases {
        assert_eq!(
            format_list(&t, &opts, resolver),
            text(want),
            "ipvsadm {what}"
        );
    }
    assert_eq!(format_save(&t, true, &NumericOnly), text(SN));
    assert_eq!(format_save(&t, false, &r), text(S_NAMES));
    assert_eq!(format_timeouts(&Timeouts::default()), text(TIMEOUT));
    assert_eq!(format_daemon(), "");
}

#[test]
fn connections_match_ipvsadm() {
    let c = conns();
    let n = list_opts(|o| {
        o.numeric = true;
        o.connections = true;
    });
    assert_eq!(format_connections(&c, &n, &NumericOnly), text(LNC));
    assert_eq!(
        format_connections(&c, &list_opts(|o| o.connections = true), &names()),
        text(LC)
    );
    let p = ListOptions {
        persistent_conn: true,
        ..n
    };
    assert_eq!(
        format_connections(&c, &p, &NumericOnly),
        text(LNC_PERSISTENT)
    );
    assert_eq!(
        format_connections(&[], &n, &NumericOnly),
        "IPVS connection entries\npro expire state       source             virtual            destination\n"
    );
}

#[test]
fn one_service_listing_has_no_header() {
    let t = table();
    let o = list_opts(|o| {
        o.numeric = true;
        o.service = Some(tcp("[2001:db8::1]:443"));
    });
    assert_eq!(
        format_list(&t, &o, &NumericOnly),
        text(
            r"Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
TCP  [2001:db8::1]:443 wlc persistent 3600 mask 64|
  -> [::ffff:1.2.3.4]:443         Masq    2      0          0         |
  -> [2001:db8::10]:443           Masq    1      0          0         |"
        )
    );
    let o = list_opts(|o| {
        o.stats = true;
        o.service = Some(udp("10.0.0.1:53"));
    });
    assert_eq!(
        format_list(&t, &o, &names()),
        text(
            r"Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes|
  -> RemoteAddress:Port|
UDP  10.0.0.1:domain                     5       10       20     3000     4000|
  -> 10.0.1.2:domain                     5       10       20     3000     4000|"
        )
    );
}

#[test]
fn draining_reals_are_not_listed() {
    let mut t = seed001();
    t[0].reals[0].draining = true;
    let out = format_list(&t, &list_opts(|o| o.numeric = true), &NumericOnly);
    assert!(!out.contains("211.238.41.166"), "{out}");
    assert!(!format_save(&t, true, &NumericOnly).contains("211.238.41.166"));
}

#[test]
fn disabled_reals_are_not_listed() {
    let mut t = seed001();
    let out = format_list(&t, &list_opts(|o| o.numeric = true), &NumericOnly);
    assert!(out.contains("211.238.41.166"), "{out}");
    t[0].reals[0].admin = herd_core::api::AdminState::Disabled;
    let out = format_list(&t, &list_opts(|o| o.numeric = true), &NumericOnly);
    assert!(!out.contains("211.238.41.166"), "{out}");
    assert!(!format_save(&t, true, &NumericOnly).contains("211.238.41.166"));
}

#[test]
fn largenum_units() {
    let mut t = seed001();
    let counts = [
        99_999_999,
        100_000_000,
        999_999_999,
        99_999_999_999,
        100_000_000_000_000,
    ];
    t[1].stats = stats(counts);
    let out = format_list(
        &t,
        &list_opts(|o| {
            o.numeric = true;
            o.stats = true;
        }),
        &NumericOnly,
    );
    assert!(
        out.contains(
            "TCP  211.238.41.170:22            99999999  100000K  999999K   99999M     100T\n"
        ),
        "{out}"
    );
    let out = format_list(
        &t,
        &list_opts(|o| {
            o.numeric = true;
            o.stats = true;
            o.exact = true;
        }),
        &NumericOnly,
    );
    assert!(
        out.contains("TCP  211.238.41.170:22            99999999 100000000 999999999 99999999999 100000000000000\n"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Save and restore.

#[test]
fn restore_reads_save_output() {
    let cmds = parse_restore(&format_save(&table(), true, &NumericOnly)).unwrap();
    assert_eq!(cmds.len(), 12);
    assert_eq!(
        cmds[0],
        Command::AddService(flags(
            persistent(spec(tcp("200.0.0.1:80"), SchedulerKind::Sh), 300, 24),
            true,
            true
        ))
    );
    assert_eq!(
        cmds[3],
        Command::AddReal {
            service: tcp("200.0.0.1:80"),
            real: real("10.0.0.9:80", 65535, Forward::Tunnel),
        }
    );
    assert_eq!(
        cmds[9],
        Command::AddReal {
            service: tcp("[2001:db8::1]:443"),
            real: real("[::ffff:1.2.3.4]:443", 2, Forward::Masq),
        }
    );
    // Names, for IPv4 (gethostbyname has no IPv6).
    let v4: Vec<ServiceStatus> = table()
        .into_iter()
        .filter(|s| !s.spec.key.address.is_ipv6())
        .collect();
    let by_name = parse_restore_with(&format_save(&v4, false, &names()), &names()).unwrap();
    let by_number = parse_restore(&format_save(&v4, true, &NumericOnly)).unwrap();
    assert_eq!(by_name, by_number);
}

#[test]
fn restore_lines() {
    let input = "# saved by ipvsadm-save\n\
                 \n\
                 \t \r\n\
                 -A -t 10.0.0.1:80 -s rr   # trailing comment\r\n\
                 ipvsadm -a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 3\n\
                 -a\t-t 10.0.0.1:80 -R 10.0.0.3 w 2\n\
                 --set 10 20 30\n\
                 -C";
    let cmds = parse_restore(input).unwrap();
    assert_eq!(
        cmds,
        vec![
            Command::AddService(spec(tcp("10.0.0.1:80"), SchedulerKind::Rr)),
            Command::AddReal {
                service: tcp("10.0.0.1:80"),
                real: real("10.0.0.2:80", 3, Forward::Masq),
            },
            Command::AddReal {
                service: tcp("10.0.0.1:80"),
                real: real("10.0.0.3:80", 2, Forward::Route),
            },
            Command::SetTimeouts(Timeouts {
                tcp: 10,
                tcp_fin: 20,
                udp: 30,
            }),
            Command::Clear,
        ]
    );

    let bad = "-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.0.0.2 -w 99999\n-C\n";
    let err = parse_restore(bad).unwrap_err();
    assert_eq!(
        (err.line, err.text.as_str()),
        (2, "-a -t 10.0.0.1:80 -r 10.0.0.2 -w 99999")
    );
    assert_eq!(
        (err.error.message.as_str(), err.error.exit_code()),
        ("illegal weight specified", 2)
    );
    assert_eq!(err.to_string(), "line 2: illegal weight specified");
    let (done, err) = parse_restore_partial(bad, &NumericOnly);
    assert_eq!(
        done,
        vec![Command::AddService(spec(
            tcp("10.0.0.1:80"),
            SchedulerKind::Wlc
        ))]
    );
    assert_eq!(err.map(|e| e.line), Some(2));

    // -R inside -R is refused, as ipvsadm does to avoid a loop.
    let err = parse_restore("-C\n-R\n").unwrap_err();
    assert_eq!((err.line, err.error.kind), (2, UsageErrorKind::TryHelp));
    assert_eq!(parse_restore("").unwrap(), vec![]);
    assert_eq!(parse_restore("ipvsadm\n").unwrap(), vec![]);
}

/// A set of services and real servers, unique by key and address, of one family each.
fn arb_table() -> impl Strategy<Value = Vec<(ServiceSpec, Vec<RealSpec>)>> {
    let ip = |v6: bool| -> BoxedStrategy<IpAddr> {
        if v6 {
            any::<u128>()
                .prop_map(|n| IpAddr::V6(Ipv6Addr::from(n)))
                .boxed()
        } else {
            any::<u32>()
                .prop_map(|n| IpAddr::V4(Ipv4Addr::from(n)))
                .boxed()
        }
    };
    let service = any::<bool>().prop_flat_map(move |v6| {
        let persistence =
            prop::option::of((1..=MAX_TIMEOUT, if v6 { 1u8..=128 } else { 0u8..=32 }))
                .prop_map(|p| p.map(|(timeout, prefix)| Persistence { timeout, prefix }));
        let forward = prop_oneof![
            Just(Forward::Route),
            Just(Forward::Masq),
            Just(Forward::Tunnel)
        ];
        let reals = prop::collection::vec((ip(v6), any::<u16>(), 0..=65535u32, forward), 0..5);
        (
            any::<bool>(),
            ip(v6),
            1..=65535u16,
            prop::sample::select(SchedulerKind::ALL.to_vec()),
            any::<(bool, bool)>(),
            persistence,
            reals,
        )
            .prop_map(
                |(is_tcp, ip, port, scheduler, (fallback, hport), persistence, reals)| {
                    let key = ServiceKey {
                        protocol: if is_tcp { Protocol::Tcp } else { Protocol::Udp },
                        address: SocketAddr::new(ip, port),
                    };
                    let spec = ServiceSpec {
                        key,
                        name: None,
                        scheduler,
                        sched_flags: SchedFlags {
                            fallback,
                            port: hport,
                        },
                        persistence,
                        proxy_protocol: false,
                    };
                    let mut by_addr = BTreeMap::new();
                    for (ip, port, weight, forward) in reals {
                        let address = SocketAddr::new(ip, port);
                        by_addr.insert(
                            address,
                            RealSpec {
                                address,
                                weight,
                                upper_threshold: 0,
                                lower_threshold: 0,
                                forward,
                            },
                        );
                    }
                    (spec, by_addr.into_values().collect::<Vec<_>>())
                },
            )
    });
    prop::collection::vec(service, 0..8).prop_map(|v| {
        let mut by_key = BTreeMap::new();
        for (s, r) in v {
            by_key.insert(s.key, (s, r));
        }
        by_key.into_values().collect()
    })
}

proptest! {
    #[test]
    fn save_then_restore_gives_the_same_table(table in arb_table()) {
        let statuses: Vec<ServiceStatus> = table
            .iter()
            .map(|(s, r)| sstat(s.clone(), r.iter().map(|&r| rstat(r, 0, 0, 0)).collect()))
            .collect();
        let saved = format_save(&statuses, true, &NumericOnly);
        let cmds = parse_restore(&saved).map_err(|e| TestCaseError::fail(format!("{e}\n{saved}")))?;
        let mut got: BTreeMap<ServiceKey, (ServiceSpec, BTreeMap<SocketAddr, RealSpec>)> = BTreeMap::new();
        for c in cmds {
            match c {
                Command::AddService(s) => {
                    prop_assert!(got.insert(s.key, (s, BTreeMap::new())).is_none());
                }
                Command::AddReal { service, real } => {
                    let entry = got.get_mut(&service).ok_or_else(|| TestCaseError::fail("real before its service"))?;
                    prop_assert!(entry.1.insert(real.address, real).is_none());
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        let want: BTreeMap<ServiceKey, (ServiceSpec, BTreeMap<SocketAddr, RealSpec>)> = table
            .into_iter()
            .map(|(s, r)| (s.key, (s, r.into_iter().map(|r| (r.address, r)).collect())))
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn listing_has_ipvsadm_columns(table in arb_table()) {
        let statuses: Vec<ServiceStatus> = table
            .iter()
            .map(|(s, r)| sstat(s.clone(), r.iter().map(|&r| rstat(r, 0, 0, 0)).collect()))
            .collect();
        let out = format_list(&statuses, &list_opts(|o| o.numeric = true), &NumericOnly);
        for line in out.lines().filter(|l| l.starts_with("  -> ") && !l.contains('[') && !l.contains("Remote")) {
            // Address column of 28, then the method in 7, the weight in 6 and two counts in 10.
            prop_assert_eq!(line.len(), 5 + 28 + 1 + 7 + 1 + 6 + 1 + 10 + 1 + 10, "{:?}", line);
        }
    }
}

fn arb_word() -> impl Strategy<Value = String> {
    let words = [
        "-A",
        "-E",
        "-D",
        "-C",
        "-a",
        "-e",
        "-d",
        "-L",
        "-l",
        "-n",
        "-c",
        "-S",
        "-R",
        "-Z",
        "-t",
        "-u",
        "-s",
        "-p",
        "-M",
        "-b",
        "-w",
        "-x",
        "-y",
        "-g",
        "-m",
        "-i",
        "-r",
        "-f",
        "-6",
        "-o",
        "-h",
        "-v",
        "-X",
        "--set",
        "--stats",
        "--rate",
        "--exact",
        "--timeout",
        "--nosort",
        "--tun-type",
        "--tun-port",
        "--persistent",
        "--weight=3",
        "--",
        "-",
        "w",
        "1",
        "0",
        "360",
        "wlc",
        "sh",
        "sh-port",
        "1.2.3.4:80",
        "1.2.3.4",
        "[::1]:80",
        "::1",
        "255.255.255.0",
        "64",
        "-Ln",
        "-At",
        "-p=5",
        "é",
        "-é",
        "-Lé",
        "[",
        "[:",
        ":",
    ];
    prop_oneof![
        prop::sample::select(words.to_vec()).prop_map(str::to_string),
        any::<String>(),
        "-[a-zA-Z0-9=]{1,4}",
    ]
}

proptest! {
    #[test]
    fn parsing_never_panics(words in prop::collection::vec(arb_word(), 0..10)) {
        let t = names();
        let _ = parse_args_with(&words, &t);
        let _ = parse_restore_with(&words.join(" "), &t);
        let _ = parse_restore_with(&words.join("\n"), &t);
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers of the C library.

#[test]
fn c_library_parsers() {
    let a = |s: &str| inet_aton(s).map(|a| a.to_string());
    assert_eq!(a("1.2.3.4"), Some("1.2.3.4".into()));
    assert_eq!(a("127.1"), Some("127.0.0.1".into()));
    assert_eq!(a("10.1.256"), Some("10.1.1.0".into()));
    assert_eq!(a("0x7f.1"), Some("127.0.0.1".into()));
    assert_eq!(a("010.0.0.1"), Some("8.0.0.1".into()));
    assert_eq!(a("4294967295"), Some("255.255.255.255".into()));
    assert_eq!(a("1.2.3.4 trailing"), Some("1.2.3.4".into()));
    for bad in [
        "",
        "4294967296",
        "1.2.3.256",
        "1.2.3.4.5",
        "08",
        "0x",
        "1..2",
        "1.2.3.",
        "a.b.c.d",
        "-1",
        " 1.2.3.4",
    ] {
        assert_eq!(a(bad), None, "{bad:?}");
    }
    let n = |s: &str| ntop6(s.parse().unwrap());
    assert_eq!(n("::"), "::");
    assert_eq!(n("::1"), "::1");
    assert_eq!(n("1::"), "1::");
    assert_eq!(n("2001:db8::1"), "2001:db8::1");
    assert_eq!(n("2001:db8:0:1:0:0:0:1"), "2001:db8:0:1::1");
    assert_eq!(n("2001:0:0:1:0:0:0:1"), "2001:0:0:1::1");
    assert_eq!(n("1:0:2:0:3:0:4:0"), "1:0:2:0:3:0:4:0");
    assert_eq!(n("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
    assert_eq!(n("::1.2.3.4"), "::1.2.3.4");
    assert_eq!(n("::ffff:0:1.2.3.4"), "::ffff:0:102:304");
    assert_eq!(n("fe80::1:2"), "fe80::1:2");
    assert_eq!(strtol_exact(" +12"), Some(12));
    assert_eq!(strtol_exact("-0"), Some(0));
    assert_eq!(strtol_exact("12 "), None);
    assert_eq!(strtol_exact("99999999999999999999"), None);
    assert_eq!(strtol_exact(""), None);
}

#[test]
fn host_tables() {
    let t = names();
    assert_eq!(t.port_name(80, Protocol::Tcp).as_deref(), Some("http"));
    assert_eq!(t.port_name(80, Protocol::Udp), None);
    assert_eq!(t.port_by_name("www", Protocol::Tcp), Some(80));
    assert_eq!(t.port_by_name("webcache", Protocol::Tcp), Some(8080));
    assert_eq!(t.port_by_name("domain", Protocol::Udp), Some(53));
    assert_eq!(
        t.host_name("200.0.0.1".parse().unwrap()).as_deref(),
        Some("frontend-virtual-service.example.org")
    );
    assert_eq!(
        t.host_name("2001:db8::10".parse().unwrap()).as_deref(),
        Some("v6host.example")
    );
    assert_eq!(
        t.host_by_name("Frontend"),
        Some(Ipv4Addr::new(200, 0, 0, 1))
    );
    assert_eq!(t.host_by_name("v6host.example"), None);
}

// ---------------------------------------------------------------------------------------------
// Messages.

#[test]
fn api_errors_map_to_ipvsadm_messages() {
    let k = tcp("1.2.3.4:80");
    let add = Command::AddService(spec(k, SchedulerKind::Wlc));
    let edit = Command::EditService(spec(k, SchedulerKind::Wlc));
    let del = Command::DeleteService(k);
    let add_real = Command::AddReal {
        service: k,
        real: real("5.6.7.8:80", 1, Forward::Route),
    };
    let edit_real = Command::EditReal {
        service: k,
        real: real("5.6.7.8:80", 1, Forward::Route),
    };
    let del_real = Command::DeleteReal {
        service: k,
        address: sa("5.6.7.8:80"),
    };
    let list = Command::List(list_opts(|o| o.service = Some(k)));
    let m = |kind, cmd: &Command| {
        let (msg, code) = api_error_message(kind, cmd);
        (msg, code)
    };
    let s = |x: &str, c: i32| (x.to_string(), c);
    assert_eq!(
        m(ErrorKind::ServiceExists, &add),
        s("Service already exists", 255)
    );
    assert_eq!(m(ErrorKind::NoService, &edit), s("No such service", 255));
    assert_eq!(m(ErrorKind::NoService, &del), s("No such service", 255));
    assert_eq!(
        m(ErrorKind::NoService, &Command::Zero { service: Some(k) }),
        s("No such service", 255)
    );
    assert_eq!(
        m(ErrorKind::NoService, &add_real),
        s("Service not defined", 255)
    );
    assert_eq!(
        m(ErrorKind::NoService, &edit_real),
        s("Service not defined", 255)
    );
    assert_eq!(
        m(ErrorKind::NoService, &del_real),
        s("Service not defined", 255)
    );
    assert_eq!(
        m(ErrorKind::RealExists, &add_real),
        s("Destination already exists", 255)
    );
    assert_eq!(
        m(ErrorKind::NoReal, &edit_real),
        s("No such destination", 255)
    );
    assert_eq!(
        m(ErrorKind::NoReal, &del_real),
        s("No such destination", 255)
    );
    assert_eq!(m(ErrorKind::NoService, &list), s("No such service", 1));
    assert_eq!(
        m(ErrorKind::Internal, &Command::Clear),
        s("Memory allocation problem", 255)
    );
    assert_eq!(
        m(
            ErrorKind::Invalid,
            &Command::SetTimeouts(Timeouts::default())
        ),
        s(
            "Invalid operation.  Possibly wrong module version, address not unicast, ...",
            255
        )
    );
    assert_eq!(
        m(ErrorKind::Internal, &Command::Save { numeric: true }).1,
        1
    );

    let e = herd_core::api::ApiError::new(
        ErrorKind::Bind,
        "cannot bind 1.2.3.4:80: Address already in use",
    );
    assert_eq!(
        api_error_report(&e, &add),
        s("cannot bind 1.2.3.4:80: Address already in use", 255)
    );
    let e =
        herd_core::api::ApiError::new(ErrorKind::ServiceExists, "service TCP 1.2.3.4:80 exists");
    assert_eq!(api_error_report(&e, &add), s("Service already exists", 255));
    assert_eq!(unreachable_message("Connection refused").1, 2);
}

#[test]
fn help_and_version() {
    let h = help_text();
    assert!(h.starts_with(version_text()));
    assert!(version_text().starts_with("herd ipvsadm v"));
    assert!(h.contains("\nUsage:\n  herd ipvsadm -A|E virtual-service"));
    assert!(h.contains("  --add-service     -A        add virtual service with options\n"));
    assert!(h.contains("rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh|twos"));
    assert!(h.ends_with('\n'));
}
