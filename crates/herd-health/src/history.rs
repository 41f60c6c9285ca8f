//! The health history on disk: an SQLite file with every state change, alert (with its
//! outcome) and hold, and a downtime log (mon's `dtlog`: one row per outage, written when the
//! target comes back). Old rows are pruned by age.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_core::api::{DowntimeEntry, HealthEvent};
use rusqlite::{params, Connection, OpenFlags};

/// An open history file.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    check_name TEXT NOT NULL,
    targets TEXT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events(time_ms);
CREATE TABLE IF NOT EXISTS downtime (
    id INTEGER PRIMARY KEY,
    check_name TEXT NOT NULL,
    target TEXT NOT NULL,
    down_ms INTEGER NOT NULL,
    up_ms INTEGER NOT NULL,
    summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS downtime_up ON downtime(up_ms);
";

/// The most rows one request lists: the history file keeps weeks, and a client asking for
/// `limit=999999999` gets this many, not a response of gigabytes built in the daemon.
pub const MAX_LISTED: usize = 10_000;

/// What went wrong with the history file; the texts name the file where it matters.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Its directory cannot be created.
    #[error("{}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file cannot be opened or set up.
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    /// The writer thread cannot be started.
    #[error("cannot start the history writer: {0}")]
    Writer(std::io::Error),
}

fn err(path: &Path) -> impl FnOnce(rusqlite::Error) -> HistoryError + '_ {
    move |source| HistoryError::Open {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Opens (creating file, directory and tables if needed) for writing.
    pub fn open(path: &Path) -> Result<Store, HistoryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(err(path))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(err(path))?;
        // WAL: readers (the CLI) never block the writer; NORMAL: a power cut may lose the
        // last moments, never corrupt the file.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err(path))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err(path))?;
        conn.execute_batch(SCHEMA).map_err(err(path))?;
        Ok(Store { conn })
    }

    /// Opens an existing file read-only.
    pub fn open_read(path: &Path) -> Result<Store, HistoryError> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(err(path))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(err(path))?;
        Ok(Store { conn })
    }

    /// Appends events and outages in one transaction.
    pub fn append(
        &mut self,
        events: &[HealthEvent],
        outages: &[DowntimeEntry],
    ) -> Result<(), HistoryError> {
        let tx = self.conn.transaction()?;
        {
            let mut ins = tx
                .prepare(
                    "INSERT INTO events (time_ms, check_name, targets, event, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                ?;
            for e in events {
                ins.execute(params![
                    to_i64(e.time_ms),
                    e.check,
                    e.targets,
                    e.event,
                    e.detail
                ])?;
            }
            let mut ins = tx
                .prepare(
                    "INSERT INTO downtime (check_name, target, down_ms, up_ms, summary) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                ?;
            for o in outages {
                ins.execute(params![
                    o.check,
                    o.target,
                    to_i64(o.down_ms),
                    to_i64(o.up_ms),
                    o.summary
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The last `limit` events, oldest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<HealthEvent>, HistoryError> {
        self.last_rows(
            "SELECT time_ms, check_name, targets, event, detail FROM
             (SELECT * FROM events ORDER BY id DESC LIMIT ?1) ORDER BY id",
            limit,
            |r| {
                Ok(HealthEvent {
                    time_ms: from_i64(r.get(0)?),
                    check: r.get(1)?,
                    targets: r.get(2)?,
                    event: r.get(3)?,
                    detail: r.get(4)?,
                })
            },
        )
    }

    /// The last `limit` outages, oldest first.
    pub fn downtime(&self, limit: usize) -> Result<Vec<DowntimeEntry>, HistoryError> {
        self.last_rows(
            "SELECT check_name, target, down_ms, up_ms, summary FROM
             (SELECT * FROM downtime ORDER BY id DESC LIMIT ?1) ORDER BY id",
            limit,
            |r| {
                Ok(DowntimeEntry {
                    check: r.get(0)?,
                    target: r.get(1)?,
                    down_ms: from_i64(r.get(2)?),
                    up_ms: from_i64(r.get(3)?),
                    summary: r.get(4)?,
                })
            },
        )
    }

    /// Runs `sql` (one `LIMIT ?1` parameter, at most [`MAX_LISTED`]) and maps each row.
    fn last_rows<T>(
        &self,
        sql: &str,
        limit: usize,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, HistoryError> {
        let mut q = self.conn.prepare(sql)?;
        let rows = q.query_map(params![to_i64(limit.min(MAX_LISTED) as u64)], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes what is older than `before_ms`; returns how many rows went.
    pub fn prune(&mut self, before_ms: u64) -> Result<usize, HistoryError> {
        let t = to_i64(before_ms);
        let a = self
            .conn
            .execute("DELETE FROM events WHERE time_ms < ?1", params![t])?;
        let b = self
            .conn
            .execute("DELETE FROM downtime WHERE up_ms < ?1", params![t])?;
        Ok(a + b)
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64, event: &str) -> HealthEvent {
        HealthEvent {
            time_ms: t,
            check: "http".into(),
            targets: "127.0.0.1:80".into(),
            event: event.into(),
            detail: format!("at {t}"),
        }
    }

    #[test]
    fn a_listing_is_at_most_ten_thousand_rows_the_newest() {
        let dir = std::env::temp_dir().join(format!("herd-history-max-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("health.db");
        let mut s = Store::open(&path).unwrap();
        let evs: Vec<HealthEvent> = (0..MAX_LISTED as u64 + 5).map(|t| ev(t, "up")).collect();
        s.append(&evs, &[]).unwrap();
        let got = s.recent(usize::MAX).unwrap();
        assert_eq!(got.len(), MAX_LISTED);
        assert_eq!(got.last().unwrap().time_ms, MAX_LISTED as u64 + 4);
        assert_eq!(got[0].time_ms, 5);
        assert_eq!(s.downtime(usize::MAX).unwrap().len(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn events_and_outages_survive_reopening_and_are_pruned_by_age() {
        let dir = std::env::temp_dir().join(format!("herd-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/health.db");
        {
            let mut s = Store::open(&path).unwrap();
            s.append(&[ev(1000, "down"), ev(5000, "up")], &[]).unwrap();
            s.append(
                &[ev(9000, "alert")],
                &[DowntimeEntry {
                    check: "http".into(),
                    target: "127.0.0.1:80".into(),
                    down_ms: 1000,
                    up_ms: 5000,
                    summary: "connect refused".into(),
                }],
            )
            .unwrap();
        }
        let r = Store::open_read(&path).unwrap();
        let all = r.recent(10).unwrap();
        assert_eq!(
            all.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
            ["down", "up", "alert"]
        );
        assert_eq!(
            r.recent(2).unwrap()[0].event,
            "up",
            "the last two, oldest first"
        );
        assert_eq!(
            r.downtime(10).unwrap()[0].up_ms - r.downtime(10).unwrap()[0].down_ms,
            4000
        );
        let mut w = Store::open(&path).unwrap();
        assert_eq!(w.prune(5001).unwrap(), 3, "two events and the outage");
        assert_eq!(w.recent(10).unwrap().len(), 1);
        assert!(w.downtime(10).unwrap().is_empty());
        // A path that cannot be a file is an error naming it, not a panic.
        let bad = Store::open(&dir.join("sub/health.db/x.db")).unwrap_err();
        assert!(bad.to_string().contains("health.db"), "{bad}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
