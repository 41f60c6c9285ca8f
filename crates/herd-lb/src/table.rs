//! The director's virtual service table and its operations.
//!
//! Every change that adds or removes a listener goes through the data plane first and is
//! committed to the table only when the data plane accepted it, so a failure (address in use)
//! leaves both unchanged. A reload and a start-up are the same operation: the difference
//! between the table and a config, applied (start-up is a reload from an empty table).

use std::net::SocketAddr;
use std::sync::Arc;

use herd_core::api::{ApiError, ConnEntry, ErrorKind, RealHealth, ServiceStatus};
use herd_core::config::lb::{LbConfig, ServiceConfig};
use herd_core::model::{RealSpec, ServiceKey, ServiceSpec, Timeouts, MAX_THRESHOLD, MAX_WEIGHT};

use crate::dataplane::{DataPlane, Settings};
use crate::service::Service;

/// The set of virtual services, in the order they were added.
#[derive(Debug)]
pub struct Table {
    services: Vec<Arc<Service>>,
    settings: Settings,
    /// Feeds scheduler seeds so each scheduler instance draws its own random sequence.
    seed: u64,
}

impl Table {
    pub fn new(settings: Settings) -> Self {
        Table {
            services: Vec::new(),
            settings,
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

    fn need(&self, key: &ServiceKey) -> Result<&Arc<Service>, ApiError> {
        self.get(key)
            .ok_or_else(|| ApiError::new(ErrorKind::NoService, format!("no virtual service {key}")))
    }

    pub fn add_service(
        &mut self,
        spec: ServiceSpec,
        reals: &[RealSpec],
        dp: &dyn DataPlane,
    ) -> Result<(), ApiError> {
        check_service(&spec)?;
        if self.get(&spec.key).is_some() {
            return Err(ApiError::new(
                ErrorKind::ServiceExists,
                format!("virtual service {} already exists", spec.key),
            ));
        }
        for r in reals {
            check_real(&spec.key, r)?;
        }
        let seed = self.next_seed();
        let mut next = self.services.clone();
        next.push(Service::new(spec, reals, seed));
        dp.apply(&next)?;
        self.services = next;
        Ok(())
    }

    pub fn edit_service(&mut self, spec: ServiceSpec) -> Result<(), ApiError> {
        check_service(&spec)?;
        let seed = self.next_seed();
        self.need(&spec.key)?.set_spec(spec, seed);
        Ok(())
    }

    pub fn delete_service(&mut self, key: &ServiceKey, dp: &dyn DataPlane) -> Result<(), ApiError> {
        self.need(key)?;
        let next: Vec<_> = self
            .services
            .iter()
            .filter(|s| s.key() != *key)
            .cloned()
            .collect();
        dp.apply(&next)?;
        self.services = next;
        Ok(())
    }

    pub fn clear(&mut self, dp: &dyn DataPlane) -> Result<(), ApiError> {
        dp.apply(&[])?;
        self.services.clear();
        Ok(())
    }

    pub fn add_real(&mut self, key: &ServiceKey, real: RealSpec) -> Result<(), ApiError> {
        let svc = self.need(key)?;
        check_real(key, &real)?;
        if svc.has_real(real.address) {
            return Err(ApiError::new(
                ErrorKind::RealExists,
                format!("real server {} already exists in {key}", real.address),
            ));
        }
        svc.add_real(real);
        Ok(())
    }

    pub fn edit_real(&mut self, key: &ServiceKey, real: RealSpec) -> Result<(), ApiError> {
        let svc = self.need(key)?;
        check_real(key, &real)?;
        if !svc.edit_real(real) {
            return Err(no_real(key, real.address));
        }
        Ok(())
    }

    /// Applies the health monitor's verdict on a real server (see [`Service::set_health`]).
    pub fn set_health(
        &self,
        key: &ServiceKey,
        addr: SocketAddr,
        health: RealHealth,
    ) -> Result<(), ApiError> {
        if !self.need(key)?.set_health(addr, health) {
            return Err(no_real(key, addr));
        }
        Ok(())
    }

    /// Applies an operator's drain, disable or enable (see [`Service::set_admin`]).
    pub fn set_admin(
        &self,
        key: &ServiceKey,
        addr: SocketAddr,
        state: herd_core::api::AdminState,
    ) -> Result<(), ApiError> {
        if !self.need(key)?.set_admin(addr, state) {
            return Err(no_real(key, addr));
        }
        Ok(())
    }

    pub fn delete_real(&mut self, key: &ServiceKey, addr: SocketAddr) -> Result<(), ApiError> {
        if !self.need(key)?.remove_real(addr) {
            return Err(no_real(key, addr));
        }
        Ok(())
    }

    /// Zeroes the counters of one service or of all.
    pub fn zero(&mut self, key: Option<&ServiceKey>) -> Result<(), ApiError> {
        match key {
            Some(k) => self.need(k)?.zero(),
            None => self.services.iter().for_each(|s| s.zero()),
        }
        Ok(())
    }

    /// Changes timeouts; a zero leaves a value as it is (ipvsadm `--set`).
    pub fn set_timeouts(&mut self, t: Timeouts, dp: &dyn DataPlane) {
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
        dp.set_settings(self.settings);
    }

    /// Makes the table equal to `cfg`: services whose key is unchanged keep their listeners,
    /// connections and counters, and take the new scheduler, persistence and real servers;
    /// real servers no longer listed are quiesced and drained; new services are bound, and
    /// services no longer listed stop accepting while their connections finish. If a new
    /// listener cannot be bound, nothing changes.
    pub fn apply_config(&mut self, cfg: &LbConfig, dp: &dyn DataPlane) -> Result<(), ApiError> {
        for s in &cfg.services {
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
        dp.set_settings(settings);
        if let Err(e) = dp.apply(&next) {
            dp.set_settings(self.settings);
            return Err(e);
        }
        for (svc, s) in updates {
            if svc.spec() != s.spec {
                let seed = self.next_seed();
                svc.set_spec(s.spec.clone(), seed);
            }
            svc.reconcile_reals(&s.reals);
            svc.set_quorum(s.quorum);
        }
        self.settings = settings;
        self.services = next;
        Ok(())
    }

    pub fn status(&self, key: Option<&ServiceKey>) -> Result<Vec<ServiceStatus>, ApiError> {
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

fn no_real(key: &ServiceKey, addr: SocketAddr) -> ApiError {
    ApiError::new(ErrorKind::NoReal, format!("no real server {addr} in {key}"))
}

fn check_service(spec: &ServiceSpec) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::new(ErrorKind::Invalid, m));
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

fn check_real(key: &ServiceKey, r: &RealSpec) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::new(ErrorKind::Invalid, m));
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
