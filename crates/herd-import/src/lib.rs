//! herd-import: other tools' configs turned into herd's, for `herd import`.
//!
//! - [`mon`]: mon's `mon.cf` (hostgroups, watches, services, periods, alerts, `lvs.alert`).
//!
//! Invariant: an importer is a function from the other tool's config text to herd's config text
//! and a list of notes; it reads no file and runs nothing (the CLI reads the file and validates
//! the output with herd-core's config parser).

pub mod mon;
