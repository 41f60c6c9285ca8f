//! The director's virtual service table and its operations.
//!
//! The table owns its data plane and is the one path to it: every change that adds or removes a
//! listener goes through the data plane first and is committed to the table only when the data
//! plane accepted it, so a failure (address in use) leaves both unchanged; every other change to
//! forwarding (real servers, weights, health verdicts, an operator's drain, the quorum) is made
//! in the table and then told to the data plane ([`DataPlane::changed`]). A reload and a start-up
//! are the same operation: the difference between the table and a config, applied (start-up is
//! a reload from an empty table).

use std::net::SocketAddr;
use std::sync::Arc;

use herd_core::api::{AdminState, ConnEntry, RealEdit, RealHealth, ServiceEdit, ServiceStatus};
use herd_core::config::lb::{LbConfig, ServiceConfig};
use herd_core::model::{RealSpec, ServiceKey, ServiceSpec, Timeouts, MAX_THRESHOLD, MAX_WEIGHT};

use crate::dataplane::{Change, DataPlane, DataPlaneError, Settings};
use crate::service::Service;

/// Why the table refused an operation.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("no virtual service {0}")]
    NoService(ServiceKey),
    #[error("virtual service {0} already exists")]
    ServiceExists(ServiceKey),
    #[error("real server {real} already exists in {service}")]
    RealExists {
        service: ServiceKey,
        real: SocketAddr,
    },
    #[error("no real server {real} in {service}")]
    NoReal {
        service: ServiceKey,
        real: SocketAddr,
    },
    /// A value out of range or a combination the director cannot serve.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
}

/// The set of virtual services, in the order they were added, and the data plane serving them.
#[derive(Debug)]
pub struct Table {
    services: Vec<Arc<Service>>,
    settings: Settings,
    dp: Arc<dyn DataPlane>,
    /// Feeds scheduler seeds so each scheduler instance draws its own random sequence.
    seed: u64,
}

impl Table {
    /// An empty table served by `dp` (which gets `settings` at once).
    pub fn new(settings: Settings, dp: Arc<dyn DataPlane>) -> Self {
        dp.set_settings(settings);
        Table {
            services: Vec::new(),
            settings,
            dp,
            seed: 0x5eed_0f4e_7d00,
        }
    }

    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    pub fn get(&self, key: &ServiceKey) -> Option<&Arc<Service>> {
        self.services.iter().find(|s| s.key() == *key)
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    fn next_seed(&mut self) -> u64 {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.seed
    }

    fn need(&self, key: &ServiceKey) -> Result<&Arc<Service>, LbError> {
        self.get(key).ok_or(LbError::NoService(*key))
    }

    /// Makes a change with `f` on the service `key` (`false`: there was nothing to change it
    /// on) and tells the data plane.
    fn change(
        &self,
        key: &ServiceKey,
        change: Change,
        f: impl FnOnce(&Service) -> bool,
        absent: impl FnOnce() -> LbError,
    ) -> Result<(), LbError> {
        self.change_if(key, change, |s| f(s).then_some(true), absent)
    }

    /// As [`Table::change`], for a change that may turn out to be none (`Some(false)`: the
    /// data plane is not told).
    fn change_if(
        &self,
        key: &ServiceKey,
        change: Change,
        f: impl FnOnce(&Service) -> Option<bool>,
        absent: impl FnOnce() -> LbError,
    ) -> Result<(), LbError> {
        let svc = self.need(key)?;
        match f(svc) {
            None => Err(absent()),
            Some(changed) => {
                if changed {
                    self.dp.changed(svc, change);
                }
                Ok(())
            }
        }
    }

    pub fn add_service(&mut self, spec: ServiceSpec, reals: &[RealSpec]) -> Result<(), LbError> {
        check_service(&spec)?;
        if self.get(&spec.key).is_some() {
            return Err(LbError::ServiceExists(spec.key));
        }
        for r in reals {
            check_real(&spec.key, r)?;
        }
        let seed = self.next_seed();
        let mut next = self.services.clone();
        next.push(Service::new(spec, reals, seed));
        self.dp.apply(&next)?;
        self.services = next;
        Ok(())
    }

    /// ipvsadm `-E`: the fields `edit` gives replace the running service's.
    pub fn edit_service(&mut self, edit: &ServiceEdit) -> Result<(), LbError> {
        let spec = edit.apply(&self.need(&edit.key)?.spec());
        check_service(&spec)?;
        let seed = self.next_seed();
        let key = spec.key;
        let set = |svc: &Service| {
            svc.set_spec(spec, seed);
            true
        };
        self.change(&key, Change::Service, set, || LbError::NoService(key))
    }

    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<(), LbError> {
        self.need(key)?;
        let next: Vec<_> = self
            .services
            .iter()
            .filter(|s| s.key() != *key)
            .cloned()
            .collect();
        self.dp.apply(&next)?;
        self.services = next;
        Ok(())
    }

    pub fn clear(&mut self) -> Result<(), LbError> {
        self.dp.apply(&[])?;
        self.services.clear();
        Ok(())
    }

    pub fn add_real(&mut self, key: &ServiceKey, real: RealSpec) -> Result<(), LbError> {
        let svc = self.need(key)?;
        check_real(key, &real)?;
        if svc.has_real(real.address) {
            return Err(LbError::RealExists {
                service: *key,
                real: real.address,
            });
        }
        svc.add_real(real);
        self.dp.changed(svc, Change::RealAdded(real.address));
        Ok(())
    }

    /// ipvsadm `-e`: the fields `edit` gives replace the running real server's.
    pub fn edit_real(&mut self, key: &ServiceKey, edit: &RealEdit) -> Result<(), LbError> {
        let addr = edit.address;
        let current = self
            .need(key)?
            .reals()
            .into_iter()
            .find(|r| r.address == addr);
        let real = edit.apply(&current.ok_or_else(|| no_real(key, addr))?);
        check_real(key, &real)?;
        let edit = |svc: &Service| svc.edit_real(real);
        self.change(key, Change::RealEdited(addr), edit, || no_real(key, addr))
    }

    /// Applies the health monitor's verdict on a real server (see [`Service::set_health`]).
    pub fn set_health(
        &self,
        key: &ServiceKey,
        addr: SocketAddr,
        health: RealHealth,
    ) -> Result<(), LbError> {
        let set = |svc: &Service| svc.set_health(addr, health);
        self.change_if(key, Change::Health(addr, health), set, || {
            no_real(key, addr)
        })
    }

    /// Applies an operator's drain, disable or enable (see [`Service::set_admin`]).
    pub fn set_admin(
        &self,
        key: &ServiceKey,
        addr: SocketAddr,
        state: AdminState,
    ) -> Result<(), LbError> {
        let set = |svc: &Service| svc.set_admin(addr, state);
        self.change_if(key, Change::Admin(addr, state), set, || no_real(key, addr))
    }

    pub fn delete_real(&mut self, key: &ServiceKey, addr: SocketAddr) -> Result<(), LbError> {
        let remove = |svc: &Service| svc.remove_real(addr);
        self.change(key, Change::RealRemoved(addr), remove, || {
            no_real(key, addr)
        })
    }

    /// Zeroes the counters of one service or of all.
    pub fn zero(&mut self, key: Option<&ServiceKey>) -> Result<(), LbError> {
        match key {
            Some(k) => self.need(k)?.zero(),
            None => self.services.iter().for_each(|s| s.zero()),
        }
        Ok(())
    }

    /// Changes timeouts; a zero leaves a value as it is (ipvsadm `--set`).
    pub fn set_timeouts(&mut self, t: Timeouts) {
        let cur = &mut self.settings.timeouts;
        for (new, slot) in [
            (t.tcp, &mut cur.tcp),
            (t.tcp_fin, &mut cur.tcp_fin),
            (t.udp, &mut cur.udp),
        ] {
            if new != 0 {
                *slot = new;
            }
        }
        self.dp.set_settings(self.settings);
    }

    /// Makes the table equal to `cfg`: services whose key is unchanged keep their listeners,
    /// connections and counters, and take the new scheduler, persistence and real servers;
    /// real servers no longer listed are quiesced and drained; new services are bound, and
    /// services no longer listed stop accepting while their connections finish. If a new
    /// listener cannot be bound, nothing changes.
    pub fn apply_config(&mut self, cfg: &LbConfig) -> Result<(), LbError> {
        for s in &cfg.services {
            check_service(&s.spec)?;
            for r in &s.reals {
                check_real(&s.spec.key, r)?;
            }
        }
        let mut next = Vec::with_capacity(cfg.services.len());
        let mut updates: Vec<(Arc<Service>, &ServiceConfig)> = Vec::new();
        for s in &cfg.services {
            match self.get(&s.spec.key) {
                Some(existing) => {
                    next.push(existing.clone());
                    updates.push((existing.clone(), s));
                }
                None => {
                    let seed = self.next_seed();
                    let svc = Service::new(s.spec.clone(), &s.reals, seed);
                    svc.set_quorum(s.quorum);
                    next.push(svc);
                }
            }
        }
        let settings = Settings::from_config(cfg);
        self.dp.set_settings(settings);
        if let Err(e) = self.dp.apply(&next) {
            self.dp.set_settings(self.settings);
            return Err(e.into());
        }
        for (svc, s) in updates {
            self.update(&svc, s);
        }
        self.settings = settings;
        self.services = next;
        Ok(())
    }

    /// A reload's changes to a service that stays, each told to the data plane.
    fn update(&mut self, svc: &Arc<Service>, cfg: &ServiceConfig) {
        if svc.spec() != cfg.spec {
            let seed = self.next_seed();
            svc.set_spec(cfg.spec.clone(), seed);
            self.dp.changed(svc, Change::Service);
        }
        let changes = real_changes(&svc.reals(), &cfg.reals);
        svc.reconcile_reals(&cfg.reals);
        for c in changes {
            self.dp.changed(svc, c);
        }
        // Always set: the real servers changed, so whether the quorum holds may have too.
        let quorum_changed = svc.quorum().map(|q| q.quorum) != cfg.quorum;
        svc.set_quorum(cfg.quorum);
        if quorum_changed {
            self.dp.changed(svc, Change::Quorum);
        }
    }

    pub fn status(&self, key: Option<&ServiceKey>) -> Result<Vec<ServiceStatus>, LbError> {
        match key {
            Some(k) => Ok(vec![self.need(k)?.status()]),
            None => Ok(self.services.iter().map(|s| s.status()).collect()),
        }
    }

    pub fn connections(&self, now_ms: u64) -> Vec<ConnEntry> {
        let mut out = Vec::new();
        for s in &self.services {
            s.connections(now_ms, &self.settings.timeouts, &mut out);
        }
        out
    }

    /// Housekeeping for every service; see [`Service::maintain`].
    pub fn maintain(&self, now_ms: u64, sample_rates: bool) {
        for s in &self.services {
            s.maintain(now_ms, sample_rates);
        }
    }

    /// The effective state as a config (for `herd lb save`).
    pub fn to_config(&self, base: &LbConfig) -> LbConfig {
        LbConfig {
            timeouts: self.settings.timeouts,
            connect_timeout: self.settings.connect_timeout,
            services: self
                .services
                .iter()
                .map(|s| {
                    // Config order is the order real servers were added: the reverse of the
                    // kernel's list order.
                    let mut reals = s.reals();
                    reals.reverse();
                    ServiceConfig {
                        spec: s.spec(),
                        reals,
                        quorum: s.quorum().map(|q| q.quorum),
                    }
                })
                .collect(),
            ..base.clone()
        }
    }
}

fn no_real(key: &ServiceKey, addr: SocketAddr) -> LbError {
    LbError::NoReal {
        service: *key,
        real: addr,
    }
}

/// What a reload from `old` to `new` real servers changes, in the order the table makes it.
fn real_changes(old: &[RealSpec], new: &[RealSpec]) -> Vec<Change> {
    let mut out = Vec::new();
    for r in new {
        match old.iter().find(|o| o.address == r.address) {
            None => out.push(Change::RealAdded(r.address)),
            Some(o) if o != r => out.push(Change::RealEdited(r.address)),
            Some(_) => {}
        }
    }
    for o in old {
        if !new.iter().any(|r| r.address == o.address) {
            out.push(Change::RealRemoved(o.address));
        }
    }
    out
}

fn check_service(spec: &ServiceSpec) -> Result<(), LbError> {
    let bad = |m: String| Err(LbError::Invalid(m));
    if spec.key.address.port() == 0 {
        return bad(format!(
            "{}: a virtual service needs a port other than 0",
            spec.key
        ));
    }
    if spec.proxy_protocol && spec.key.protocol == herd_core::model::Protocol::Udp {
        return bad(format!(
            "{}: the PROXY protocol is supported for TCP services only",
            spec.key
        ));
    }
    Ok(())
}

fn check_real(key: &ServiceKey, r: &RealSpec) -> Result<(), LbError> {
    let bad = |m: String| Err(LbError::Invalid(m));
    if r.weight > MAX_WEIGHT {
        return bad(format!(
            "weight {} of real server {} is out of range 0..={MAX_WEIGHT}",
            r.weight, r.address
        ));
    }
    if r.upper_threshold > MAX_THRESHOLD || r.lower_threshold > MAX_THRESHOLD {
        return bad(format!(
            "thresholds of real server {} are out of range 0..={MAX_THRESHOLD}",
            r.address
        ));
    }
    if r.lower_threshold > r.upper_threshold {
        return bad(format!(
            "lower threshold {} of real server {} is above its upper threshold {}",
            r.lower_threshold, r.address, r.upper_threshold
        ));
    }
    if r.address.is_ipv6() != key.address.is_ipv6() {
        return bad(format!(
            "real server {} and virtual service {key} differ in address family",
            r.address
        ));
    }
    if r.address.port() == 0 {
        return bad(format!("real server {} needs a port", r.address));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{Event, Recording};
    use herd_core::api::service_spec;
    use herd_core::model::{Forward, Protocol, SchedulerKind};

    fn key(port: u16) -> ServiceKey {
        ServiceKey {
            protocol: Protocol::Tcp,
            address: SocketAddr::from(([192, 0, 2, 1], port)),
        }
    }

    fn real(host: u8, weight: u32) -> RealSpec {
        RealSpec {
            address: SocketAddr::from(([10, 0, 0, host], 80)),
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
            forward: Forward::Masq,
        }
    }

    fn addr(host: u8) -> SocketAddr {
        real(host, 0).address
    }

    fn table() -> (Table, Arc<Recording>) {
        let rec = Arc::new(Recording::default());
        let t = Table::new(Settings::from_config(&LbConfig::default()), rec.clone());
        rec.take();
        (t, rec)
    }

    fn config(reals: &[RealSpec], scheduler: SchedulerKind) -> LbConfig {
        LbConfig {
            services: vec![ServiceConfig {
                spec: service_spec(key(80), scheduler),
                reals: reals.to_vec(),
                quorum: None,
            }],
            ..LbConfig::default()
        }
    }

    fn changes(rec: &Recording) -> Vec<Change> {
        rec.take()
            .into_iter()
            .filter_map(|e| match e {
                Event::Changed(k, c) if k == key(80) => Some(c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_ipvsadm_change_reaches_the_data_plane_in_order() {
        let (mut t, rec) = table();
        t.add_service(service_spec(key(80), SchedulerKind::Wrr), &[])
            .unwrap();
        assert_eq!(rec.take(), vec![Event::Apply(vec![key(80)])]);
        t.add_real(&key(80), real(1, 1)).unwrap();
        t.add_real(&key(80), real(2, 1)).unwrap();
        t.edit_real(&key(80), &RealEdit::weight(addr(1), 5))
            .unwrap();
        t.edit_service(&ServiceEdit::replacing(service_spec(
            key(80),
            SchedulerKind::Wlc,
        )))
        .unwrap();
        t.set_health(&key(80), addr(2), RealHealth::Quiesced)
            .unwrap();
        t.set_admin(&key(80), addr(1), AdminState::Draining)
            .unwrap();
        t.delete_real(&key(80), addr(2)).unwrap();
        assert_eq!(
            changes(&rec),
            vec![
                Change::RealAdded(addr(1)),
                Change::RealAdded(addr(2)),
                Change::RealEdited(addr(1)),
                Change::Service,
                Change::Health(addr(2), RealHealth::Quiesced),
                Change::Admin(addr(1), AdminState::Draining),
                Change::RealRemoved(addr(2)),
            ]
        );
        // The weight the data plane would read is the new one.
        assert_eq!(t.get(&key(80)).unwrap().reals()[0].weight, 5);
        t.delete_service(&key(80)).unwrap();
        assert_eq!(rec.take(), vec![Event::Apply(vec![])]);
    }

    #[test]
    fn a_refused_change_tells_the_data_plane_nothing() {
        let (mut t, rec) = table();
        t.add_service(service_spec(key(80), SchedulerKind::Rr), &[])
            .unwrap();
        rec.take();
        assert!(matches!(
            t.edit_real(&key(80), &RealEdit::weight(addr(1), 5)),
            Err(LbError::NoReal { .. })
        ));
        assert!(matches!(
            t.set_health(&key(81), addr(1), RealHealth::Up),
            Err(LbError::NoService(_))
        ));
        assert!(matches!(
            t.add_real(&key(80), real(1, MAX_WEIGHT + 1)),
            Err(LbError::Invalid(_))
        ));
        assert_eq!(rec.take(), vec![]);
    }

    #[test]
    fn a_reload_tells_each_real_server_change_and_no_unchanged_one() {
        let (mut t, rec) = table();
        t.apply_config(&config(
            &[real(1, 1), real(2, 1), real(3, 1)],
            SchedulerKind::Wrr,
        ))
        .unwrap();
        rec.take();
        // 1 keeps its weight, 2 changes weight, 3 goes, 4 comes; the scheduler changes.
        t.apply_config(&config(
            &[real(1, 1), real(2, 7), real(4, 1)],
            SchedulerKind::Wlc,
        ))
        .unwrap();
        assert_eq!(
            changes(&rec),
            vec![
                Change::Service,
                Change::RealEdited(addr(2)),
                Change::RealAdded(addr(4)),
                Change::RealRemoved(addr(3)),
            ]
        );
        // The same config again changes nothing.
        t.apply_config(&config(
            &[real(1, 1), real(2, 7), real(4, 1)],
            SchedulerKind::Wlc,
        ))
        .unwrap();
        assert_eq!(changes(&rec), vec![]);
    }

    #[test]
    fn a_reload_the_data_plane_refuses_changes_nothing() {
        let (mut t, rec) = table();
        t.apply_config(&config(&[real(1, 1)], SchedulerKind::Wrr))
            .unwrap();
        rec.take();
        let mut cfg = config(&[real(1, 9)], SchedulerKind::Wrr);
        cfg.services.push(ServiceConfig {
            spec: service_spec(key(81), SchedulerKind::Rr),
            reals: vec![],
            quorum: None,
        });
        rec.fail_apply
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(matches!(
            t.apply_config(&cfg),
            Err(LbError::DataPlane(DataPlaneError::Bind { .. }))
        ));
        assert_eq!(t.services().len(), 1);
        assert_eq!(t.get(&key(80)).unwrap().reals()[0].weight, 1);
        // Only the settings were set and set back.
        assert!(rec.take().iter().all(|e| matches!(e, Event::Settings(_))));
    }

    #[test]
    fn an_edit_changes_the_fields_it_gives_and_keeps_the_others() {
        let (mut t, _rec) = table();
        let mut spec = service_spec(key(80), SchedulerKind::Wrr);
        spec.name = Some("web".into());
        spec.proxy_protocol = true;
        let mut r = real(1, 3);
        r.upper_threshold = 100;
        r.lower_threshold = 50;
        t.add_service(spec, &[r]).unwrap();
        // ipvsadm -E: its fields, not herd's own.
        let edit = ServiceEdit {
            name: None,
            proxy_protocol: None,
            ..ServiceEdit::replacing(service_spec(key(80), SchedulerKind::Sh))
        };
        t.edit_service(&edit).unwrap();
        let now = t.get(&key(80)).unwrap().spec();
        assert_eq!(now.scheduler, SchedulerKind::Sh);
        assert_eq!(now.name.as_deref(), Some("web"));
        assert!(now.proxy_protocol);
        // The dashboard's weight: thresholds and forwarding stay.
        t.edit_real(&key(80), &RealEdit::weight(addr(1), 9))
            .unwrap();
        let now = t.get(&key(80)).unwrap().reals()[0];
        assert_eq!(
            (now.weight, now.upper_threshold, now.lower_threshold),
            (9, 100, 50)
        );
        // An edit that would break a rule is refused whole.
        let bad = RealEdit {
            lower_threshold: Some(200),
            ..RealEdit::weight(addr(1), 1)
        };
        assert!(matches!(
            t.edit_real(&key(80), &bad),
            Err(LbError::Invalid(_))
        ));
        assert_eq!(t.get(&key(80)).unwrap().reals()[0].weight, 9);
    }
}
