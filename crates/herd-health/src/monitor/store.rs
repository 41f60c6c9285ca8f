//! The history file's writer: a thread that owns the SQLite connection, so that the probe
//! tasks never wait for the disk.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};

use herd_core::api::{DowntimeEntry, HealthEvent};

use crate::history::{HistoryError, Store};

/// Work for the history file's writer.
#[derive(Debug)]
pub(super) enum StoreOp {
    Event(HealthEvent),
    Outage(DowntimeEntry),
    /// Delete what is older than this (ms since the epoch).
    Prune(u64),
}

/// The running writer of one history file; it ends when this is dropped.
#[derive(Debug)]
pub(super) struct Writer {
    pub path: PathBuf,
    pub tx: Sender<StoreOp>,
}

/// Opens the history file and starts the thread that writes it.
pub(super) fn start(path: &Path) -> Result<Writer, HistoryError> {
    let store = Store::open(path)?;
    let (tx, rx) = channel::<StoreOp>();
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("herd-history".into())
        .spawn(move || write(store, &rx, &shown))
        .map_err(HistoryError::Writer)?;
    Ok(Writer {
        path: path.to_path_buf(),
        tx,
    })
}

fn write(mut store: Store, rx: &Receiver<StoreOp>, shown: &str) {
    while let Ok(first) = rx.recv() {
        // Everything queued meanwhile goes in the same transaction.
        let (mut events, mut outages, mut prune) = (Vec::new(), Vec::new(), None);
        for op in std::iter::once(first).chain(rx.try_iter()) {
            match op {
                StoreOp::Event(e) => events.push(e),
                StoreOp::Outage(o) => outages.push(o),
                StoreOp::Prune(t) => prune = Some(t),
            }
        }
        if let Err(e) = store.append(&events, &outages) {
            tracing::error!(file = %shown, error = %e, "cannot write the health history");
        }
        if let Some(t) = prune {
            match store.prune(t) {
                Ok(n) if n > 0 => {
                    tracing::info!(file = %shown, rows = n, "old health history deleted")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(file = %shown, error = %e, "cannot prune the health history")
                }
            }
        }
    }
}
