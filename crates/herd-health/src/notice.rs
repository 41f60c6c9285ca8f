//! What an alert sink is given and what it gives back: the notification (one check, one
//! kind, possibly a grouped burst of targets) and the recorded delivery. The monitor builds
//! notices; the sinks (`alert`, `email`) read them; neither needs the other for these types.

use serde::Serialize;

/// What kind of notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Targets are failing (mon's `alert`).
    Failure,
    /// Targets recovered (mon's `upalert`).
    Up,
    /// Flapping started; alerts are held until it settles.
    Flapping,
    /// `herd health test-alert`.
    Test,
}

impl Kind {
    /// `MON_ALERTTYPE`.
    pub(crate) fn mon_type(self) -> &'static str {
        match self {
            Kind::Failure | Kind::Flapping => "failure",
            Kind::Up => "up",
            Kind::Test => "test",
        }
    }
}

/// One notification: possibly several targets of one check (a grouped burst).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    pub kind: Kind,
    /// The check's name (mon's service).
    pub check: String,
    /// The check's group: its service, host group or `hosts` (mon's watch group).
    pub group: String,
    pub hosts: Vec<String>,
    pub summary: String,
    pub detail: String,
    /// Unix seconds.
    pub time: u64,
    pub first_failure: u64,
    pub last_failure: u64,
    pub last_success: u64,
}

/// The recorded outcome of one alert run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub ok: bool,
    /// What went wrong, or `""`.
    pub error: String,
    pub took_ms: u64,
}
