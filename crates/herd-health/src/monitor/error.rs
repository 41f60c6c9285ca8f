//! The monitor's errors.

/// Why an operator's request to the monitor was refused (the texts are what the API shows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonitorError {
    #[error("no check named {0:?}")]
    NoCheck(String),
    #[error("check {0} has no alerts")]
    NoAlerts(String),
    #[error("no silence #{0}")]
    NoSilence(u64),
    /// The rule engine refused a silence or a disable, in its words.
    #[error("{0}")]
    Refused(String),
}
