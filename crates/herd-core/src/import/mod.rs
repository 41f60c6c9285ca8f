//! Importers: other tools' configs turned into herd's.
//!
//! - [`mon`]: mon's `mon.cf` (hostgroups, watches, services, periods, alerts, `lvs.alert`).

pub mod mon;
