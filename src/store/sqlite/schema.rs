//! The embedded schema and how a connection is set up: migrations compiled into the binary,
//! the schema version kept in `PRAGMA user_version`, and the pragmas every connection needs.
//!
//! Depends only on rusqlite and the store's error type; the backend calls [`migrate`] once on
//! its writer connection before any other connection is opened.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::map_err;
use crate::store::StoreError;

/// Migration `n` (1-based) brings the schema from version `n - 1` to `n`. Append only: a
/// released migration is never edited.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_web_sessions.sql"),
    include_str!("migrations/0003_membership_lists.sql"),
    include_str!("migrations/0004_sync_lease.sql"),
    include_str!("migrations/0005_identity_claims.sql"),
    include_str!("migrations/0006_audit_chain.sql"),
    include_str!("migrations/0007_outbox.sql"),
    include_str!("migrations/0008_tap_code_length.sql"),
    include_str!("migrations/0009_user_manager.sql"),
    include_str!("migrations/0010_onboarding_failures.sql"),
];

/// The version whose migration adds the audit chain: the events already stored are linked
/// right after its script, in the same transaction.
const AUDIT_CHAIN_VERSION: i64 = 6;

/// The schema version this binary writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// `PRAGMA application_id` of a tapd database ("TAPD" in ASCII), so tapd refuses to migrate
/// some other application's SQLite file.
pub(crate) const APPLICATION_ID: i64 = 0x5441_5044;

/// Pragmas for the one writer connection. `synchronous=FULL` because an acknowledged admin
/// write must survive `kill -9` and power loss; WAL with FULL syncs the log on every commit.
pub(crate) fn configure_writer(
    conn: &Connection,
    busy_timeout: Duration,
) -> Result<(), StoreError> {
    conn.busy_timeout(busy_timeout).map_err(map_err)?;
    // journal_mode answers with the resulting mode; an in-memory database stays "memory".
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(map_err)?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        return Err(StoreError::unavailable(format!(
            "could not switch the database to WAL mode (it is in {mode} mode)"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(map_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(map_err)?;
    // Deleted and overwritten row content is zeroed in the pages a write touches anyway, so a
    // secret sealed at migration (or a deleted ceremony) leaves no clear copy in the file.
    conn.pragma_update(None, "secure_delete", "FAST")
        .map_err(map_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Pragmas for a read connection: it may never write (`query_only`), and it waits for the
/// writer's checkpoints no longer than the busy timeout. (Reading through `mmap` was tried for
/// the RADIUS accept path and dropped: the audit log grows the file steadily, and every growth
/// remapped each reader's view, with TLB shootdowns costing about what the `pread`s had.)
pub(crate) fn configure_reader(
    conn: &Connection,
    busy_timeout: Duration,
) -> Result<(), StoreError> {
    conn.busy_timeout(busy_timeout).map_err(map_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(map_err)?;
    conn.pragma_update(None, "query_only", "ON")
        .map_err(map_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Brings the schema up to [`SCHEMA_VERSION`] in one immediate transaction, or refuses a
/// database written by a newer tapd (its tables may mean something this binary can't know).
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(map_err)?;
    let application_id: i64 = tx
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(map_err)?;
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(StoreError::corrupt(format!(
            "not a tapd database (application_id {application_id:#x})"
        )));
    }
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 0 {
        return Err(StoreError::corrupt(format!(
            "negative schema version {found}"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version <= found {
            continue;
        }
        tx.execute_batch(sql).map_err(map_err)?;
        if version == AUDIT_CHAIN_VERSION {
            super::audit_chain::link_existing(&tx)?;
        }
        // user_version lives in the database header, so it commits (or not) with the tables.
        tx.pragma_update(None, "user_version", version)
            .map_err(map_err)?;
    }
    if application_id == 0 {
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(map_err)?;
    }
    tx.commit().map_err(map_err)
}
