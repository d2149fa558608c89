//! WAL checkpoints on a thread of their own, off every writer's critical path.
//!
//! SQLite's default is for the connection whose commit takes the WAL past 1,000 pages to copy
//! the log back into the database file before that commit returns. A commit is already durable
//! once the log is synced (`synchronous=FULL`), so the copy only delays the writer: a full
//! directory sync of 100,000 users waited about 0.2 s for it, and sign-in audit commits behind
//! the writer lock waited for every periodic copy. Here the writer runs with
//! `wal_autocheckpoint=0` and, after each commit, nudges a checkpointer thread that has its own
//! connection. It runs a `PASSIVE` checkpoint (which never blocks readers or the writer) at
//! most once per [`MIN_INTERVAL`], so a busy writer pays one database sync per interval rather
//! than one per commit. The thread ends, after a last checkpoint, when the store is dropped.
//!
//! May depend on: rusqlite and the backend's error mapping.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// The checkpointer runs at most this often.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Wakes the checkpointer after a commit. Cheap and never blocking; cloned into the blocking
/// closures that commit.
#[derive(Clone, Debug)]
pub(crate) struct Nudge(SyncSender<()>);

impl Nudge {
    /// Tells the checkpointer the log has grown. A nudge already pending covers this one.
    pub(crate) fn committed(&self) {
        match self.0.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            // The thread is gone (it could not start, or it stopped): the log is checkpointed
            // when the last connection closes.
            Err(TrySendError::Disconnected(())) => {}
        }
    }
}

/// Starts the checkpointer on `conn` (a connection of its own to the same file).
pub(crate) fn start(conn: Connection) -> std::io::Result<Nudge> {
    let (nudge, wake) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("tapd-sqlite-checkpoint".to_owned())
        .spawn(move || run(&conn, &wake))?;
    Ok(Nudge(nudge))
}

fn run(conn: &Connection, wake: &Receiver<()>) {
    let mut last: Option<Instant> = None;
    while wake.recv().is_ok() {
        // Commits within the interval since the last checkpoint are gathered into one.
        if let Some(due) = last.map(|at| at + MIN_INTERVAL) {
            loop {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                match wake.recv_timeout(due - now) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        checkpoint(conn);
        last = Some(Instant::now());
    }
    // The store is gone; copy whatever its last commits logged.
    checkpoint(conn);
}

/// One `PASSIVE` checkpoint: copies every frame no reader still needs, waiting for nobody.
fn checkpoint(conn: &Connection) {
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    });
    match result {
        Ok((_busy, logged, copied)) => {
            log::trace!("SQLite checkpoint: {copied} of {logged} log frames copied");
        }
        // Nothing is lost: the frames stay in the log, and the next checkpoint copies them.
        Err(e) => log::warn!(
            "SQLite WAL checkpoint failed (retried after the next write): {}",
            crate::logging::ErrorChain(&e)
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_nudge_copies_the_log_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = Connection::open(&path).unwrap();
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer
            .execute_batch("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('x');")
            .unwrap();
        // The table's page is in the log only: the database file holds the header page.
        let before = std::fs::metadata(&path).unwrap().len();
        let nudge = start(Connection::open(&path).unwrap()).unwrap();
        nudge.committed();
        // The database file grows to hold the table once the checkpoint has copied it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() == before {
            assert!(Instant::now() < deadline, "no checkpoint within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(nudge);
        let count: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(count, 1);
    }
}
