//! The embedded SQLite backend of [`Store`]: one database file, no server to run.
//!
//! Shape: one writer connection behind an async mutex, plus a small pool of read-only
//! connections, so that under WAL reads never wait for a write. Every rusqlite call runs on
//! `tokio::task::spawn_blocking`. Every write is one `BEGIN IMMEDIATE` transaction (taking the
//! write lock up front, so it never fails with `SQLITE_BUSY` half-way through) that carries its
//! audit event; the writer runs with `synchronous=FULL`, so a write that returned `Ok` survives
//! `kill -9` and power loss.
//!
//! Copying the log back into the database (the WAL checkpoint) is left to a thread of its own
//! (`checkpoint`), so no commit waits for it. The read every sign-in makes, a user and its
//! groups' names, is answered from memory until the next sync writes (`sign_in_cache`): this
//! backend's file belongs to one tapd process, so every change to users and groups is made,
//! and seen, in that process.
//!
//! Names are compared ASCII-case-insensitively (SQLite's `lower()`), the same rule as
//! [`crate::group_ref`]. Timestamps are kept to the microsecond.
//!
//! May depend on: `model`, `store`, `clock`. The schema and its migrations live in `schema`, row
//! decoding in `rows`.
//!
//! Over 800 lines on purpose: the one `impl Store` block, method for method in the trait's
//! order, so that it can be read against the PostgreSQL backend; the schema, rows, identity
//! and checkpoint code already live in their own files.

mod audit_chain;
mod checkpoint;
mod identity;
mod outbox;
mod rows;
mod schema;
mod sign_in_cache;
#[cfg(test)]
mod tests;

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

use crate::clock::{Clock, SystemClock};
use crate::model::{
    AuditEvent, AuditFilter, Group, GroupRef, MailOutcome, ManagerLink, NewAuditEvent, OutboxMail,
    RegisteredMethod, StoredTap, SyncStatus, TapPolicy, Timestamp, User, WebCeremony, WebSession,
};
use crate::store::seal::{self, Sealer};
use crate::store::{
    ClaimedCode, LeaseLost, Store, StoreError, SyncFence, SyncLease, SyncLeaseOutcome, SyncPlan,
};

pub use schema::SCHEMA_VERSION;

/// Read connections opened next to the writer. Two cores serve reads comfortably with four.
const READ_POOL_SIZE: usize = 4;

/// `audit()` returns this many events when the filter's limit is 0.
pub const AUDIT_DEFAULT_LIMIT: u32 = 100;
/// `audit()` never returns more than this many events.
pub const AUDIT_MAX_LIMIT: u32 = 1000;

/// The default `busy_timeout`: how long a connection waits for a lock held by another process
/// (e.g. a backup tool) before reporting [`StoreError::Unavailable`].
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Maps a rusqlite error onto the store's error kinds: locks and I/O are `Unavailable` (a retry
/// may work), undecodable values are `Corrupt`.
pub(crate) fn map_err(err: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match err {
        E::SqliteFailure(ffi, message) => {
            let detail = match message {
                Some(m) => format!("{m} ({ffi})"),
                None => ffi.to_string(),
            };
            match ffi.code {
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                    StoreError::corrupt_from(detail, ffi)
                }
                // Busy, Locked, CannotOpen, SystemIoFailure, DiskFull, ReadOnly,
                // PermissionDenied, OutOfMemory, and constraint failures (e.g. a TAP for a user
                // a concurrent sync just deleted) are conditions of the moment, not of the data.
                _ => StoreError::unavailable_from(detail, ffi),
            }
        }
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(..)
        | E::InvalidColumnType(..)
        | E::InvalidColumnIndex(..)
        | E::InvalidColumnName(..)
        | E::QueryReturnedNoRows => StoreError::corrupt_from(err.to_string(), err),
        other => StoreError::unavailable_from(other.to_string(), other),
    }
}

/// The answer of an outbox operation on a store opened without a secrets key.
fn no_secrets_key() -> StoreError {
    StoreError::unavailable(
        "the onboarding outbox needs the store's secrets key (codes are kept only sealed)",
    )
}

fn join_err(err: tokio::task::JoinError) -> StoreError {
    StoreError::unavailable_from(format!("store task failed: {err}"), err)
}

/// A read connection on loan from the pool; goes back when dropped, even if the closure using
/// it panicked.
struct PooledReader {
    conn: Option<Connection>,
    pool: Arc<StdMutex<Vec<Connection>>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for PooledReader {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
    }
}

/// Read connections, handed out one caller at a time.
struct ReadPool {
    idle: Arc<StdMutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    async fn acquire(&self) -> Result<PooledReader, StoreError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::unavailable("read pool closed".to_owned()))?;
        let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match conn {
            Some(conn) => Ok(PooledReader {
                conn: Some(conn),
                pool: self.idle.clone(),
                _permit: permit,
            }),
            // One permit per connection, so a permit without a connection means one was lost.
            None => Err(StoreError::unavailable(
                "no read connection available".to_owned(),
            )),
        }
    }
}

/// The SQLite [`Store`].
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    /// `None` for an in-memory database, whose reads share the writer connection.
    readers: Option<ReadPool>,
    /// Wakes the checkpointer after each commit; `None` when the writer checkpoints itself
    /// (in memory, or when the checkpointer thread could not start).
    checkpoint: Option<checkpoint::Nudge>,
    /// `user_with_group_refs` answers, valid until the next sync writes.
    sign_ins: Arc<sign_in_cache::SignInCache>,
    /// Seals authenticator-app secrets ([`seal`]); `None` only for a store opened without
    /// [`SqliteStore::with_secrets`] (tests of other parts): secrets are then kept as given.
    secrets: Option<Arc<Sealer>>,
    /// Stamps what the store audits on its own when no caller's event gives the time (the
    /// identity conflicts of a sync applied without events); [`SqliteStore::with_clock`].
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("read_pool", &self.readers.is_some())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it to
    /// [`SCHEMA_VERSION`]. A missing parent directory is created with mode 0700 and a new
    /// database file with mode 0600. `busy_timeout` bounds how long a statement waits for a
    /// lock held elsewhere ([`DEFAULT_BUSY_TIMEOUT`] is a sane value).
    ///
    /// Fails with [`StoreError::SchemaTooNew`] when a newer tapd wrote the file.
    pub async fn open(path: &Path, busy_timeout: Duration) -> Result<SqliteStore, StoreError> {
        let path = path.to_path_buf();
        let (writer, readers, checkpoint) = tokio::task::spawn_blocking(move || {
            prepare_file(&path)?;
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let mut writer = Connection::open_with_flags(&path, flags).map_err(map_err)?;
            schema::configure_writer(&writer, busy_timeout)?;
            schema::migrate(&mut writer)?;
            identity::backfill_keys(&writer)?;
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let mut readers = Vec::with_capacity(READ_POOL_SIZE);
            for _ in 0..READ_POOL_SIZE {
                let reader = Connection::open_with_flags(&path, flags).map_err(map_err)?;
                schema::configure_reader(&reader, busy_timeout)?;
                readers.push(reader);
            }
            let checkpointer = Connection::open_with_flags(&path, flags).map_err(map_err)?;
            checkpointer.busy_timeout(busy_timeout).map_err(map_err)?;
            let checkpoint = match checkpoint::start(checkpointer) {
                Ok(nudge) => {
                    writer
                        .pragma_update(None, "wal_autocheckpoint", 0)
                        .map_err(map_err)?;
                    Some(nudge)
                }
                Err(e) => {
                    log::warn!(
                        "cannot start the SQLite checkpoint thread ({e}); \
                         commits will checkpoint the log themselves"
                    );
                    None
                }
            };
            Ok::<_, StoreError>((writer, readers, checkpoint))
        })
        .await
        .map_err(join_err)??;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(writer)),
            readers: Some(ReadPool {
                idle: Arc::new(StdMutex::new(readers)),
                permits: Arc::new(Semaphore::new(READ_POOL_SIZE)),
            }),
            checkpoint,
            sign_ins: Arc::default(),
            secrets: None,
            clock: Arc::new(SystemClock),
        })
    }

    /// A fresh, private in-memory database with the current schema; for tests. Reads and
    /// writes share one connection.
    pub async fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let writer = tokio::task::spawn_blocking(|| {
            let mut conn = Connection::open_in_memory().map_err(map_err)?;
            schema::configure_writer(&conn, DEFAULT_BUSY_TIMEOUT)?;
            schema::migrate(&mut conn)?;
            Ok::<_, StoreError>(conn)
        })
        .await
        .map_err(join_err)??;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(writer)),
            readers: None,
            checkpoint: None,
            sign_ins: Arc::default(),
            secrets: None,
            clock: Arc::new(SystemClock),
        })
    }

    /// Seals every secret the store holds with `sealer` from now on, and seals, in one
    /// transaction, the ones found in clear (written before tapd sealed them) or under the
    /// previous key (a rotation): idempotent. Fails, changing nothing, when a row was sealed
    /// under a key `sealer` does not hold, naming it.
    pub async fn with_secrets(mut self, sealer: Sealer) -> Result<SqliteStore, StoreError> {
        let sealer = Arc::new(sealer);
        let for_migration = sealer.clone();
        let resealed = self.write(move |tx| reseal_all(tx, &for_migration)).await?;
        if resealed > 0 {
            // The clear rows may still sit in the write-ahead log: copy it into the database
            // (whose old cells `secure_delete` zeroed) and truncate it.
            let conn = self.writer.clone().lock_owned().await;
            let truncated = tokio::task::spawn_blocking(move || truncate_log(&conn))
                .await
                .map_err(join_err)??;
            if !truncated {
                log::warn!(
                    "store: the SQLite write-ahead log could not be truncated after sealing \
                     (another checkpoint kept running for {}s); the clear copies it may hold \
                     are overwritten by later writes and removed when tapd stops",
                    DEFAULT_BUSY_TIMEOUT.as_secs()
                );
            }
            log::info!(
                "store: sealed {resealed} authenticator secret(s) under secrets key {}",
                sealer.key_id()
            );
        }
        self.secrets = Some(sealer);
        Ok(self)
    }

    /// Reads the time from `clock` (the daemon's, or a test's manual one) instead of the
    /// system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> SqliteStore {
        self.clock = clock;
        self
    }

    fn sealer(&self) -> Option<&Sealer> {
        self.secrets.as_deref()
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the writer; commits when it returns
    /// `Ok`, rolls back otherwise.
    /// Runs one statement that changes at most one row and, in the same transaction, records
    /// `audit` only if it did: true when it did (the caller audits a refusal itself).
    async fn conditional_with_audit(
        &self,
        sql: &'static str,
        params: Vec<rusqlite::types::Value>,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let audit = audit.clone();
        self.write(move |tx| {
            let changed = tx
                .prepare_cached(sql)
                .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(params)))
                .map_err(map_err)?;
            if changed == 1 {
                insert_audit(tx, &audit)?;
            }
            Ok(changed == 1)
        })
        .await
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let mut conn = self.writer.clone().lock_owned().await;
        let checkpoint = self.checkpoint.clone();
        tokio::task::spawn_blocking(move || {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let out = f(&tx)?;
            tx.commit().map_err(map_err)?;
            if let Some(checkpoint) = checkpoint {
                checkpoint.committed();
            }
            Ok(out)
        })
        .await
        .map_err(join_err)?
    }

    /// Runs `f` (one statement, so one consistent snapshot) on a read connection.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        match &self.readers {
            Some(pool) => {
                let mut reader = pool.acquire().await?;
                tokio::task::spawn_blocking(move || match reader.conn.as_mut() {
                    Some(conn) => f(conn),
                    None => Err(StoreError::unavailable("read connection lost".to_owned())),
                })
                .await
                .map_err(join_err)?
            }
            None => {
                let conn = self.writer.clone().lock_owned().await;
                tokio::task::spawn_blocking(move || f(&conn))
                    .await
                    .map_err(join_err)?
            }
        }
    }
}

/// Creates the parent directory (0700) and the database file (0600) when they are missing;
/// leaves existing ones as the administrator set them.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| {
                    StoreError::unavailable_from(format!("creating {}: {e}", parent.display()), e)
                })?;
        }
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::unavailable_from(
            format!("creating {}: {e}", path.display()),
            e,
        )),
    }
}

/// Copies the write-ahead log into the database and truncates it to nothing: whether it was
/// done. A checkpoint already running (the checkpointer thread, woken by the commit just
/// made, or that of a store on the same file that is closing) holds the checkpoint lock, and
/// `wal_checkpoint(TRUNCATE)` then answers "busy" having truncated nothing, without waiting:
/// so it is tried again until it is done, for at most [`DEFAULT_BUSY_TIMEOUT`].
fn truncate_log(conn: &Connection) -> Result<bool, StoreError> {
    let deadline = std::time::Instant::now() + DEFAULT_BUSY_TIMEOUT;
    loop {
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
            .map_err(map_err)?;
        if busy == 0 {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Seals every authenticator secret in clear or under the previous key ([`seal::reseal`]);
/// the number of rows changed.
fn reseal_all(tx: &Transaction<'_>, sealer: &Sealer) -> Result<usize, StoreError> {
    let mut changed = 0;
    let methods: Vec<(String, String, String)> = {
        let mut stmt = tx
            .prepare("SELECT id, user_id, data FROM methods WHERE kind = ?1")
            .map_err(map_err)?;
        let rows = stmt
            .query_map([crate::model::MethodKind::SoftwareOath.as_str()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .map_err(map_err)?;
        rows.collect::<Result<_, _>>().map_err(map_err)?
    };
    for (id, user_id, data) in methods {
        let what = format!("method {id} (user {user_id})");
        if let Some(sealed) = seal::reseal(sealer, &data, &seal::method_row(&user_id, &id), &what)?
        {
            tx.execute("UPDATE methods SET data = ?1 WHERE id = ?2", [&sealed, &id])
                .map_err(map_err)?;
            changed += 1;
        }
    }
    let ceremonies: Vec<(String, String)> = {
        let mut stmt = tx
            .prepare("SELECT id, state FROM web_ceremonies WHERE kind = ?1")
            .map_err(map_err)?;
        let rows = stmt
            .query_map(
                [crate::model::CeremonyKind::TotpEnrolment.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(map_err)?;
        rows.collect::<Result<_, _>>().map_err(map_err)?
    };
    for (id, state) in ceremonies {
        let what = format!("ceremony {id}");
        if let Some(sealed) = seal::reseal(sealer, &state, &seal::ceremony_row(&id), &what)? {
            tx.execute(
                "UPDATE web_ceremonies SET state = ?1 WHERE id = ?2",
                [&sealed, &id],
            )
            .map_err(map_err)?;
            changed += 1;
        }
    }
    // Codes waiting in the onboarding outbox.
    let queued: Vec<(String, String)> = {
        let mut stmt = tx
            .prepare("SELECT id, sealed_code FROM outbox WHERE sealed_code IS NOT NULL")
            .map_err(map_err)?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(map_err)?;
        rows.collect::<Result<_, _>>().map_err(map_err)?
    };
    for (id, code) in queued {
        // Codes were never stored in clear: a value that is not sealed was written behind
        // tapd's back, and sealing it would mail it as a code. It stays as it is, and the
        // outbox worker fails its message.
        if !seal::is_sealed(&code) {
            continue;
        }
        let what = format!("outbox message {id}");
        if let Some(sealed) = seal::reseal(sealer, &code, &seal::outbox_row(&id), &what)? {
            tx.execute(
                "UPDATE outbox SET sealed_code = ?1 WHERE id = ?2",
                [&sealed, &id],
            )
            .map_err(map_err)?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// The owner and kind of a method, for sealing its data; `None` when it is gone.
fn method_owner(
    tx: &Transaction<'_>,
    method_id: &str,
) -> Result<Option<(String, String, String)>, StoreError> {
    tx.prepare_cached("SELECT user_id, kind, data FROM methods WHERE id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([method_id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()
        })
        .map_err(map_err)
}

/// Deletes the user's TAP and inserts `tap` in its place; the id of the one replaced.
fn replace_tap_in(tx: &Transaction<'_>, tap: &StoredTap) -> Result<Option<String>, StoreError> {
    let replaced: Option<String> = tx
        .prepare_cached("DELETE FROM taps WHERE user_id = ?1 RETURNING id")
        .and_then(|mut stmt| stmt.query_row([&tap.user_id], |row| row.get(0)).optional())
        .map_err(map_err)?;
    tx.prepare_cached(
        "INSERT INTO taps (id, user_id, code_hash, created, start, lifetime_in_minutes, \
         is_usable_once, used_at, code_length) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            tap.id,
            tap.user_id,
            tap.code_hash,
            rows::to_micros(tap.created),
            rows::to_micros(tap.start),
            tap.lifetime_in_minutes,
            tap.is_usable_once,
            tap.used_at.map(rows::to_micros),
            tap.code_length,
        ])
    })
    .map_err(map_err)?;
    Ok(replaced)
}

/// Inserts one audit event inside a write transaction, as the chain's next link.
fn insert_audit(tx: &Transaction<'_>, event: &NewAuditEvent) -> Result<(), StoreError> {
    audit_chain::insert(tx, std::slice::from_ref(event))
}

/// Runs `sql` with a web session's values bound as `?1`…`?10`: `id_hash, user_id, created,
/// expires, auth_method, tap_id, tap_expires, registration_deadline, interrupt_mode,
/// csrf_token` (the order both the `INSERT` and the `UPDATE` use).
fn execute_with_session(
    tx: &Transaction<'_>,
    sql: &str,
    session: &WebSession,
) -> Result<usize, StoreError> {
    tx.prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.execute(params![
                session.id_hash,
                session.user_id,
                rows::to_micros(session.created),
                rows::to_micros(session.expires),
                session.auth_method.as_str(),
                session.tap_id,
                session.tap_expires.map(rows::to_micros),
                session.registration_deadline.map(rows::to_micros),
                session.interrupt_mode,
                session.csrf_token,
            ])
        })
        .map_err(map_err)
}

/// Writes a single-row JSON table (`policy`, `sync_status`).
fn put_singleton(tx: &Transaction<'_>, table: &str, body: &str) -> Result<(), StoreError> {
    tx.prepare_cached(&format!(
        "INSERT INTO {table} (id, body) VALUES (1, ?1) \
         ON CONFLICT (id) DO UPDATE SET body = excluded.body"
    ))
    .and_then(|mut stmt| stmt.execute([body]))
    .map_err(map_err)?;
    Ok(())
}

/// SQLite's clock (the database's, as on PostgreSQL): milliseconds since 1970.
const NOW_MS: &str = "CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

/// The lease row as `(holder, epoch, expires_ms, lapsed)`, read in `tx` by SQLite's clock.
fn lease_row(tx: &Transaction<'_>) -> Result<Option<(String, u64, i64, bool)>, StoreError> {
    tx.prepare_cached(&format!(
        "SELECT holder, epoch, expires_ms, expires_ms <= {NOW_MS} FROM sync_lease WHERE id = 1"
    ))
    .and_then(|mut stmt| {
        stmt.query_row([], |row| {
            Ok((row.get(0)?, row.get::<_, i64>(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()
    })
    .map_err(map_err)
    .map(|row| {
        row.map(|(holder, epoch, expires, lapsed)| (holder, epoch.max(0) as u64, expires, lapsed))
    })
}

/// The fence check of a sync's write, in its own (immediate, so exclusive) transaction.
fn check_fence(tx: &Transaction<'_>, fence: &SyncFence) -> Result<(), StoreError> {
    let current = lease_row(tx)?.map(|(holder, epoch, _, lapsed)| (holder, epoch, lapsed));
    LeaseLost::check(fence, current).map_err(StoreError::LeaseLost)
}

fn lease_from(holder: String, epoch: u64, expires_ms: i64) -> Result<SyncLease, StoreError> {
    let expires = chrono::DateTime::from_timestamp_millis(expires_ms)
        .ok_or_else(|| StoreError::corrupt(format!("sync lease expiry {expires_ms}")))?;
    Ok(SyncLease {
        holder,
        expires,
        epoch,
    })
}

fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis())
        .unwrap_or(i64::MAX / 2)
        .max(1)
}

/// Reads a single-row JSON table, `None` when the row was never written.
fn singleton(conn: &Connection, table: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached(&format!("SELECT body FROM {table} WHERE id = 1"))
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)).optional())
        .map_err(map_err)
}

/// Runs a query and decodes every row with `decode`.
fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    let mut rows = stmt.query(params).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(map_err)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// The groups with these ids, sorted by display name; unknown ids are skipped.
fn groups_by_ids(conn: &Connection, ids: &[String]) -> Result<Vec<Group>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = rows::to_json(&ids)?;
    let sql = format!(
        "SELECT {} FROM \"groups\" g WHERE g.id IN (SELECT value FROM json_each(?1)) \
         ORDER BY lower(g.display_name), g.display_name, g.id",
        rows::GROUP_COLUMNS
    );
    query_all(conn, &sql, [&ids], rows::group)
}

/// The user `key` names and its groups as `groups` reads them (full or references only), in
/// one read transaction: two statements, one snapshot, so a sync between them can't split
/// user and groups.
fn user_and_groups<G>(
    conn: &Connection,
    key: &str,
    groups: fn(&Connection, &[String]) -> Result<Vec<G>, StoreError>,
) -> Result<Option<(User, Vec<G>)>, StoreError> {
    let tx = conn.unchecked_transaction().map_err(map_err)?;
    let found = match identity::user_by_key(&tx, key)? {
        Some(user) => {
            let groups = groups(&tx, &user.group_ids)?;
            Some((user, groups))
        }
        None => None,
    };
    tx.commit().map_err(map_err)?;
    Ok(found)
}

/// References to the groups with these ids (no member lists), in [`groups_by_ids`]' order.
fn group_refs_by_ids(conn: &Connection, ids: &[String]) -> Result<Vec<GroupRef>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = rows::to_json(&ids)?;
    query_all(
        conn,
        "SELECT g.id, g.dn, g.display_name FROM \"groups\" g \
         WHERE g.id IN (SELECT value FROM json_each(?1)) \
         ORDER BY lower(g.display_name), g.display_name, g.id",
        [&ids],
        rows::group_ref,
    )
}

/// Writes a sync plan (group member lists are not read: memberships are written from the
/// users' group ids) and its audit events inside a write transaction; identity-conflict events
/// without a sync event to stamp them from take `clock`'s time.
fn write_plan(
    tx: &Transaction<'_>,
    plan: &SyncPlan,
    audit: &[NewAuditEvent],
    mut written: std::collections::BTreeSet<String>,
    clock: &dyn Clock,
) -> Result<(), StoreError> {
    let mut upsert_group = tx
        .prepare_cached(
            "INSERT INTO \"groups\" (id, dn, display_name) VALUES (?1, ?2, ?3) \
             ON CONFLICT (id) DO UPDATE SET dn = excluded.dn, \
             display_name = excluded.display_name",
        )
        .map_err(map_err)?;
    for group in &plan.upsert_groups {
        upsert_group
            .execute([&group.id, &group.dn, &group.display_name])
            .map_err(map_err)?;
    }
    let mut writer = UserWriter::new(tx)?;
    for user in &plan.upsert_users {
        writer.upsert(user)?;
    }
    written.append(&mut writer.written);
    drop(writer);
    for id in &plan.delete_user_ids {
        delete_user(tx, id)?;
    }
    let mut delete_group = tx
        .prepare_cached("DELETE FROM \"groups\" WHERE id = ?1")
        .map_err(map_err)?;
    // Memberships stay as the users' group ids say (a group can leave the synced scope
    // while users stay members); `groups_by_id` skips the unknown id.
    for id in &plan.delete_group_ids {
        delete_group.execute([id]).map_err(map_err)?;
    }
    let mut revoke = tx
        .prepare_cached("DELETE FROM taps WHERE user_id = ?1")
        .map_err(map_err)?;
    for id in &plan.revoke_tap_user_ids {
        revoke.execute([id]).map_err(map_err)?;
    }
    for event in audit {
        insert_audit(tx, event)?;
    }
    let template = crate::store::identity::event_template(audit, clock);
    for event in identity::check_conflicts(tx, &written, &template)? {
        insert_audit(tx, &event)?;
    }
    Ok(())
}

/// A user's row as `users`' INSERT and UPDATE bind it (`?1` to `?11`), with `group_ids` as
/// their JSON list (a `String`: a `str` can't stand behind a `dyn ToSql`), the folded names
/// and the claim epoch of this write.
#[allow(clippy::ptr_arg)]
fn user_row<'a>(
    user: &'a User,
    group_ids: &'a String,
    keys: &'a (String, String),
    epoch: &'a i64,
    dates: &'a Option<String>,
) -> [&'a dyn rusqlite::ToSql; 13] {
    [
        &user.id,
        &user.dn,
        &user.username,
        &user.user_principal_name,
        &user.display_name,
        &user.mail,
        &user.account_enabled,
        group_ids,
        &keys.0,
        &keys.1,
        epoch,
        &user.manager_dn,
        dates,
    ]
}

/// Writes users one after another with the statements every new user needs prepared once:
/// a first sync runs them 100,000 times.
struct UserWriter<'c> {
    conn: &'c Connection,
    insert: rusqlite::CachedStatement<'c>,
    insert_members: rusqlite::CachedStatement<'c>,
    /// The claim epoch of this transaction's writes.
    epoch: i64,
    /// The folded names of every user written, for the conflict check.
    written: std::collections::BTreeSet<String>,
}

impl<'c> UserWriter<'c> {
    fn new(conn: &'c Connection) -> Result<Self, StoreError> {
        Ok(UserWriter {
            conn,
            insert: conn
                .prepare_cached(
                    "INSERT INTO users (id, dn, username, upn, display_name, mail, \
                     account_enabled, group_ids, username_key, upn_key, username_since, \
                     upn_since, manager_dn, dates) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .map_err(map_err)?,
            insert_members: conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO group_members (group_id, user_id) \
                     SELECT value, ?2 FROM json_each(?1)",
                )
                .map_err(map_err)?,
            epoch: identity::write_epoch(conn)?,
            written: std::collections::BTreeSet::new(),
        })
    }

    /// Inserts or updates a user in place (never `INSERT OR REPLACE`, which would delete the row
    /// and cascade away its TAP and methods) with its effective group ids, and brings the
    /// `group_members` index in line by the difference between the stored and the new ids.
    fn upsert(&mut self, user: &User) -> Result<(), StoreError> {
        let tx = self.conn;
        let mut group_ids: Vec<&str> = user.group_ids.iter().map(String::as_str).collect();
        group_ids.sort_unstable();
        group_ids.dedup();
        let list = rows::to_json(&group_ids)?;
        let keys = crate::store::identity::keys_of(user);
        let epoch = self.epoch;
        self.written.insert(keys.0.clone());
        self.written.insert(keys.1.clone());
        let dates = crate::store::codec::dates_json(&user.dates)?;
        let row = user_row(user, &list, &keys, &epoch, &dates);
        // A new user (every user of a first sync) is one insert and its memberships; only an
        // existing one needs its stored list read and the difference written.
        let inserted = self.insert.execute(&row[..]).map_err(map_err)?;
        let stored: Option<String> = if inserted == 1 {
            None
        } else {
            let stored = tx
                .prepare_cached("SELECT group_ids FROM users WHERE id = ?1")
                .and_then(|mut stmt| stmt.query_row([&user.id], |row| row.get(0)).optional())
                .map_err(map_err)?;
            // A claim keeps its epoch while the name stays the same (SET reads the old row).
            tx.prepare_cached(
                "UPDATE users SET dn = ?2, username = ?3, upn = ?4, display_name = ?5, \
                 mail = ?6, account_enabled = ?7, group_ids = ?8, username_key = ?9, \
                 upn_key = ?10, \
                 username_since = CASE WHEN username_key IS ?9 THEN username_since ELSE ?11 END, \
                 upn_since = CASE WHEN upn_key IS ?10 THEN upn_since ELSE ?11 END, \
                 manager_id = CASE WHEN manager_dn IS ?12 THEN manager_id ELSE NULL END, \
                 manager_dn = ?12, dates = ?13 \
                 WHERE id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(&row[..]))
            .map_err(map_err)?;
            stored
        };
        if stored.as_deref() == Some(list.as_str()) {
            return Ok(());
        }
        let Some(stored) = stored else {
            // A new user: all its memberships in one statement.
            self.insert_members
                .execute(params![list, user.id])
                .map_err(map_err)?;
            return Ok(());
        };
        let mut old: Vec<String> = rows::from_json("user group ids", &stored)?;
        old.sort_unstable();
        old.dedup();
        let mut remove = tx
            .prepare_cached("DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2")
            .map_err(map_err)?;
        for gone in old
            .iter()
            .filter(|g| group_ids.binary_search(&g.as_str()).is_err())
        {
            remove.execute([gone, &user.id]).map_err(map_err)?;
        }
        let mut add = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO group_members (group_id, user_id) VALUES (?1, ?2)",
            )
            .map_err(map_err)?;
        for new in group_ids
            .iter()
            .filter(|g| old.binary_search_by(|o| o.as_str().cmp(g)).is_err())
        {
            add.execute([new, &user.id.as_str()]).map_err(map_err)?;
        }
        Ok(())
    }
}

/// Deletes a user and its `group_members` rows; its TAP, methods and web sessions go with it
/// (ON DELETE CASCADE).
fn delete_user(tx: &Transaction<'_>, id: &str) -> Result<(), StoreError> {
    let stored: Option<String> = tx
        .prepare_cached("DELETE FROM users WHERE id = ?1 RETURNING group_ids")
        .and_then(|mut stmt| stmt.query_row([id], |row| row.get(0)).optional())
        .map_err(map_err)?;
    let Some(stored) = stored else {
        return Ok(());
    };
    let group_ids: Vec<String> = rows::from_json("user group ids", &stored)?;
    let mut remove = tx
        .prepare_cached("DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2")
        .map_err(map_err)?;
    for group_id in &group_ids {
        remove.execute([group_id, id]).map_err(map_err)?;
    }
    Ok(())
}

/// Builds the audit query for the filter's present conditions only, so each shape gets its own
/// cached statement and the `time` index serves both the range and the order.
fn audit_query(filter: &AuditFilter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    if let Some(since) = filter.since {
        values.push(Value::Integer(rows::to_micros(since)));
        conditions.push(format!("time >= ?{}", values.len()));
    }
    if let Some(until) = filter.until {
        values.push(Value::Integer(rows::to_micros(until)));
        conditions.push(format!("time < ?{}", values.len()));
    }
    if let Some(user) = &filter.user {
        values.push(Value::Text(user.clone()));
        let n = values.len();
        conditions.push(format!(
            "(lower(actor) = lower(?{n}) OR lower(target) = lower(?{n}))"
        ));
    }
    if let Some(activity) = &filter.activity {
        values.push(Value::Text(activity.clone()));
        conditions.push(format!(
            "instr(lower(activity), lower(?{})) > 0",
            values.len()
        ));
    }
    let limit = match filter.limit {
        0 => AUDIT_DEFAULT_LIMIT,
        n => n.min(AUDIT_MAX_LIMIT),
    };
    values.push(Value::Integer(i64::from(limit)));
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {} FROM audit {where_clause} ORDER BY time DESC, id DESC LIMIT ?{}",
        rows::AUDIT_COLUMNS,
        values.len()
    );
    (sql, values)
}

#[async_trait]
impl Store for SqliteStore {
    async fn policy(&self) -> Result<TapPolicy, StoreError> {
        self.read(|conn| match singleton(conn, "policy")? {
            Some(body) => rows::from_json("policy", &body),
            None => Ok(TapPolicy::default()),
        })
        .await
    }

    async fn put_policy(
        &self,
        policy: &TapPolicy,
        audit: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let body = rows::to_json(policy)?;
        let audit = audit.clone();
        self.write(move |tx| {
            put_singleton(tx, "policy", &body)?;
            insert_audit(tx, &audit)
        })
        .await
    }

    async fn user(&self, key: &str) -> Result<Option<User>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| identity::user_by_key(conn, &key))
            .await
    }

    async fn quarantined_users(&self) -> Result<Vec<User>, StoreError> {
        self.read(identity::quarantined).await
    }

    async fn user_with_groups(&self, key: &str) -> Result<Option<(User, Vec<Group>)>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| user_and_groups(conn, &key, groups_by_ids))
            .await
    }

    async fn user_with_group_refs(
        &self,
        key: &str,
    ) -> Result<Option<(User, Vec<GroupRef>)>, StoreError> {
        if let Some(answer) = self.sign_ins.get(key) {
            return Ok(answer);
        }
        let generation = self.sign_ins.generation();
        let owned = key.to_owned();
        let answer = self
            .read(move |conn| user_and_groups(conn, &owned, group_refs_by_ids))
            .await?;
        self.sign_ins.put(key, generation, &answer);
        Ok(answer)
    }

    async fn users(&self, search: Option<&str>) -> Result<Vec<User>, StoreError> {
        let search = search.map(str::to_owned);
        self.read(move |conn| {
            let order = "ORDER BY lower(u.username), u.username, u.id";
            match search {
                None => {
                    let sql = format!("SELECT {} FROM users u {order}", rows::USER_COLUMNS);
                    query_all(conn, &sql, [], rows::user)
                }
                Some(needle) => {
                    let sql = format!(
                        "SELECT {} FROM users u WHERE instr(lower(u.username), lower(?1)) > 0 \
                         OR instr(lower(u.upn), lower(?1)) > 0 \
                         OR instr(lower(u.display_name), lower(?1)) > 0 \
                         OR instr(lower(coalesce(u.mail, '')), lower(?1)) > 0 {order}",
                        rows::USER_COLUMNS
                    );
                    query_all(conn, &sql, [&needle], rows::user)
                }
            }
        })
        .await
    }

    async fn groups(&self) -> Result<Vec<Group>, StoreError> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {} FROM \"groups\" g ORDER BY lower(g.display_name), g.display_name, g.id",
                rows::GROUP_COLUMNS
            );
            query_all(conn, &sql, [], rows::group)
        })
        .await
    }

    async fn groups_by_id(&self, ids: &[String]) -> Result<Vec<Group>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids.to_vec();
        self.read(move |conn| groups_by_ids(conn, &ids)).await
    }

    async fn apply_sync(
        &self,
        fence: &SyncFence,
        plan: &SyncPlan,
        audit: &[NewAuditEvent],
    ) -> Result<(), StoreError> {
        // Copied for the blocking writer thread; group member lists are left out (memberships
        // are written from the users' group ids), which keeps a 100,000-user first sync lean.
        let plan = SyncPlan {
            upsert_users: plan.upsert_users.clone(),
            delete_user_ids: plan.delete_user_ids.clone(),
            upsert_groups: plan
                .upsert_groups
                .iter()
                .map(|group| Group {
                    id: group.id.clone(),
                    dn: group.dn.clone(),
                    display_name: group.display_name.clone(),
                    member_user_ids: Vec::new(),
                })
                .collect(),
            delete_group_ids: plan.delete_group_ids.clone(),
            revoke_tap_user_ids: plan.revoke_tap_user_ids.clone(),
        };
        let audit = audit.to_vec();
        let fence = fence.clone();
        let clock = self.clock.clone();
        let written = self
            .write(move |tx| {
                check_fence(tx, &fence)?;
                write_plan(tx, &plan, &audit, Default::default(), &*clock)
            })
            .await;
        self.sign_ins.invalidate();
        written
    }

    /// Holds the write transaction open while batches arrive, on a blocking thread of its own,
    /// so the directory read and the writes overlap. The writer lock is taken only once there
    /// is something to write: a sync that changes nothing leaves sign-ins free to write while
    /// the directory is read. Dropping `end` rolls back.
    async fn apply_sync_streamed(
        &self,
        fence: &SyncFence,
        mut upserts: tokio::sync::mpsc::Receiver<Vec<User>>,
        end: tokio::sync::oneshot::Receiver<crate::store::SyncPlanEnd>,
    ) -> Result<bool, StoreError> {
        if self.readers.is_none() {
            // In memory, reads share the writer connection, and the sync reads (TAPs of the
            // users it revokes) before it commits.
            return crate::store::apply_sync_collected(self, fence, upserts, end).await;
        }
        let Some(first) = upserts.recv().await else {
            return match end.await {
                Ok(end) => self
                    .apply_sync(fence, &end.plan, &end.audit)
                    .await
                    .map(|()| true),
                Err(_) => Ok(false),
            };
        };
        let mut conn = self.writer.clone().lock_owned().await;
        let checkpoint = self.checkpoint.clone();
        let fence = fence.clone();
        let clock = self.clock.clone();
        let written = tokio::task::spawn_blocking(move || {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let mut writer = UserWriter::new(&tx)?;
            for user in &first {
                writer.upsert(user)?;
            }
            drop(first);
            while let Some(batch) = upserts.blocking_recv() {
                for user in &batch {
                    writer.upsert(user)?;
                }
            }
            let written = std::mem::take(&mut writer.written);
            drop(writer);
            // Dropping `tx` without a commit rolls back.
            let Ok(end) = end.blocking_recv() else {
                return Ok(false);
            };
            write_plan(&tx, &end.plan, &end.audit, written, &*clock)?;
            check_fence(&tx, &fence)?;
            tx.commit().map_err(map_err)?;
            if let Some(checkpoint) = checkpoint {
                checkpoint.committed();
            }
            Ok(true)
        })
        .await
        .map_err(join_err)?;
        self.sign_ins.invalidate();
        written
    }

    async fn sync_status(&self) -> Result<SyncStatus, StoreError> {
        self.read(|conn| match singleton(conn, "sync_status")? {
            Some(body) => rows::from_json("sync status", &body),
            None => Ok(SyncStatus::default()),
        })
        .await
    }

    async fn put_sync_status(
        &self,
        fence: &SyncFence,
        status: &SyncStatus,
        audit: &[NewAuditEvent],
    ) -> Result<(), StoreError> {
        let body = rows::to_json(status)?;
        let fence = fence.clone();
        let audit = audit.to_vec();
        self.write(move |tx| {
            check_fence(tx, &fence)?;
            put_singleton(tx, "sync_status", &body)?;
            audit.iter().try_for_each(|event| insert_audit(tx, event))
        })
        .await
    }

    /// One SQLite file serves one node, and the syncer serialises its own runs: always
    /// granted (taking over from an earlier holder), with the epoch raised as on PostgreSQL.
    async fn try_sync_lease(
        &self,
        node: &str,
        ttl: Duration,
    ) -> Result<SyncLeaseOutcome, StoreError> {
        let node = node.to_owned();
        let ttl = ttl_millis(ttl);
        self.write(move |tx| {
            let epoch = match lease_row(tx)? {
                Some((holder, epoch, _, false)) if holder == node => epoch,
                Some((_, epoch, _, _)) => epoch + 1,
                None => 1,
            };
            let (expires,): (i64,) = tx
                .prepare_cached(&format!(
                    "INSERT INTO sync_lease (id, holder, epoch, expires_ms) \
                     VALUES (1, ?1, ?2, {NOW_MS} + ?3) \
                     ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, \
                     epoch = excluded.epoch, expires_ms = excluded.expires_ms \
                     RETURNING expires_ms"
                ))
                .and_then(|mut stmt| {
                    stmt.query_row(params![node, epoch as i64, ttl], |row| Ok((row.get(0)?,)))
                })
                .map_err(map_err)?;
            lease_from(node, epoch, expires).map(SyncLeaseOutcome::Granted)
        })
        .await
    }

    async fn renew_sync_lease(
        &self,
        fence: &SyncFence,
        ttl: Duration,
    ) -> Result<SyncLease, StoreError> {
        let fence = fence.clone();
        let ttl = ttl_millis(ttl);
        self.write(move |tx| {
            check_fence(tx, &fence)?;
            let expires: i64 = tx
                .prepare_cached(&format!(
                    "UPDATE sync_lease SET expires_ms = {NOW_MS} + ?1 WHERE id = 1 \
                     RETURNING expires_ms"
                ))
                .and_then(|mut stmt| stmt.query_row([ttl], |row| row.get(0)))
                .map_err(map_err)?;
            lease_from(fence.holder, fence.epoch, expires)
        })
        .await
    }

    async fn release_sync_lease(&self, fence: &SyncFence) -> Result<(), StoreError> {
        let fence = fence.clone();
        self.write(move |tx| {
            tx.prepare_cached(&format!(
                "UPDATE sync_lease SET expires_ms = {NOW_MS} \
                 WHERE id = 1 AND holder = ?1 AND epoch = ?2 AND expires_ms > {NOW_MS}"
            ))
            .and_then(|mut stmt| stmt.execute(params![fence.holder, fence.epoch as i64]))
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn tap_for_user(&self, user_id: &str) -> Result<Option<StoredTap>, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let sql = format!("SELECT {} FROM taps WHERE user_id = ?1", rows::TAP_COLUMNS);
            let mut found = query_all(conn, &sql, [&user_id], rows::tap)?;
            Ok(found.pop())
        })
        .await
    }

    async fn replace_tap(
        &self,
        tap: &StoredTap,
        audit: &NewAuditEvent,
    ) -> Result<Option<String>, StoreError> {
        let tap = tap.clone();
        let audit = audit.clone();
        self.write(move |tx| {
            let replaced = replace_tap_in(tx, &tap)?;
            insert_audit(tx, &audit)?;
            Ok(replaced)
        })
        .await
    }

    /// Records `audit` only when a TAP was deleted; the caller records a refusal itself.
    async fn delete_tap(
        &self,
        user_id: &str,
        tap_id: &str,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        self.conditional_with_audit(
            "DELETE FROM taps WHERE id = ?1 AND user_id = ?2",
            vec![tap_id.to_owned().into(), user_id.to_owned().into()],
            audit,
        )
        .await
    }

    async fn issue_tap_by_mail(
        &self,
        tap: &StoredTap,
        mail: &OutboxMail,
        code: &str,
        grant: Option<&str>,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let sealer = self.secrets.clone().ok_or_else(no_secrets_key)?;
        let (tap, mail, audit) = (tap.clone(), mail.clone(), audit.clone());
        let code = Zeroizing::new(code.to_owned());
        let grant = grant.map(str::to_owned);
        self.write(move |tx| {
            if !outbox::issue(tx, &sealer, &tap, &mail, &code, grant.as_deref())? {
                return Ok(false);
            }
            replace_tap_in(tx, &tap)?;
            insert_audit(tx, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn claim_mail(
        &self,
        node: &str,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Option<(OutboxMail, ClaimedCode)>, StoreError> {
        let sealer = self.secrets.clone().ok_or_else(no_secrets_key)?;
        let node = node.to_owned();
        self.write(move |tx| outbox::claim(tx, &sealer, &node, now, lease))
            .await
    }

    async fn finish_mail(
        &self,
        id: &str,
        node: &str,
        now: Timestamp,
        outcome: &MailOutcome,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let (id, node, outcome, audit) = (
            id.to_owned(),
            node.to_owned(),
            outcome.clone(),
            audit.clone(),
        );
        self.write(move |tx| outbox::finish(tx, &id, &node, now, &outcome, &audit))
            .await
    }

    async fn mails(&self, limit: u32) -> Result<Vec<OutboxMail>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {} FROM outbox ORDER BY created DESC, id LIMIT ?1",
                    outbox::COLUMNS
                ))
                .map_err(map_err)?;
            let mut rows = stmt.query([limit]).map_err(map_err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(map_err)? {
                out.push(outbox::listed(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn onboarding_baseline(
        &self,
        rule: &str,
        user_ids: &[String],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (rule, user_ids) = (rule.to_owned(), user_ids.to_vec());
        self.write(move |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO onboarding_grants (rule, user_id, granted) VALUES (?1, ?2, ?3) \
                     ON CONFLICT DO NOTHING",
                )
                .map_err(map_err)?;
            for id in user_ids {
                stmt.execute(params![rule, id, rows::to_micros(now)])
                    .map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn manager_links(&self) -> Result<Vec<ManagerLink>, StoreError> {
        self.read(|conn| {
            query_all(
                conn,
                "SELECT id, dn, upn, manager_dn, manager_id FROM users ORDER BY id",
                [],
                |row| {
                    let get = |i| row.get(i).map_err(map_err);
                    Ok(ManagerLink {
                        id: get(0)?,
                        dn: get(1)?,
                        user_principal_name: get(2)?,
                        manager_dn: row.get(3).map_err(map_err)?,
                        manager_id: row.get(4).map_err(map_err)?,
                    })
                },
            )
        })
        .await
    }

    async fn set_manager_ids(
        &self,
        changes: &[(String, Option<String>)],
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let changes = changes.to_vec();
        let written = self
            .write(move |tx| {
                let mut stmt = tx
                    .prepare_cached("UPDATE users SET manager_id = ?2 WHERE id = ?1")
                    .map_err(map_err)?;
                for (id, manager_id) in changes {
                    stmt.execute(params![id, manager_id]).map_err(map_err)?;
                }
                Ok(())
            })
            .await;
        // Users changed: the sign-in answers read before may hold the old manager.
        self.sign_ins.invalidate();
        written
    }

    async fn onboarding_granted(
        &self,
        rule: &str,
        user_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let (rule, user_ids) = (rule.to_owned(), user_ids.to_vec());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT 1 FROM onboarding_grants WHERE rule = ?1 AND user_id = ?2")
                .map_err(map_err)?;
            let mut granted = Vec::new();
            for id in user_ids {
                if stmt.exists(params![rule, id]).map_err(map_err)? {
                    granted.push(id);
                }
            }
            Ok(granted)
        })
        .await
    }

    async fn note_onboarding_failure(
        &self,
        rule: &str,
        user_id: &str,
        reason: &str,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let (rule, user_id, reason) = (rule.to_owned(), user_id.to_owned(), reason.to_owned());
        let audit = audit.clone();
        self.write(move |tx| {
            let news = tx
                .prepare_cached(
                    "INSERT INTO onboarding_failures (rule, user_id, reason, noted) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (rule, user_id) DO UPDATE \
                     SET reason = excluded.reason, noted = excluded.noted \
                     WHERE onboarding_failures.reason IS NOT excluded.reason",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![rule, user_id, reason, rows::to_micros(audit.time)])
                })
                .map_err(map_err)?;
            if news == 0 {
                return Ok(false);
            }
            insert_audit(tx, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn users_dated_between(
        &self,
        attribute: &str,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<String>, StoreError> {
        let attribute = attribute.to_owned();
        let (low, high) = crate::store::codec::sortable_window(from, to).unzip();
        self.read(move |conn| {
            // json_each takes the key as data (no path to escape); its value of a JSON string
            // is that string's text, narrowed by text order (see `sortable_window`).
            let mut stmt = conn
                .prepare_cached(
                    "SELECT u.id, j.value FROM users u, json_each(u.dates) j \
                     WHERE u.dates IS NOT NULL AND j.key = ?1 \
                     AND (?2 IS NULL OR (j.value >= ?2 AND j.value <= ?3)) ORDER BY u.id",
                )
                .map_err(map_err)?;
            let mut rows = stmt.query(params![attribute, low, high]).map_err(map_err)?;
            let mut ids = Vec::new();
            while let Some(row) = rows.next().map_err(map_err)? {
                let id: String = row.get(0).map_err(map_err)?;
                let value: rusqlite::types::Value = row.get(1).map_err(map_err)?;
                let rusqlite::types::Value::Text(value) = value else {
                    return Err(StoreError::corrupt(format!(
                        "user {id}: date {attribute:?} is not a text: {value:?}"
                    )));
                };
                if crate::store::codec::date_in(&id, &value, from, to)? {
                    ids.push(id);
                }
            }
            Ok(ids)
        })
        .await
    }

    async fn consume_one_time_tap(
        &self,
        tap_id: &str,
        now: Timestamp,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        self.conditional_with_audit(
            "UPDATE taps SET used_at = ?1 \
             WHERE id = ?2 AND is_usable_once = 1 AND used_at IS NULL",
            vec![rows::to_micros(now).into(), tap_id.to_owned().into()],
            audit,
        )
        .await
    }

    async fn methods(&self, user_id: &str) -> Result<Vec<RegisteredMethod>, StoreError> {
        let user_id = user_id.to_owned();
        let mut methods = self
            .read(move |conn| {
                let sql = format!(
                    "SELECT {} FROM methods WHERE user_id = ?1 ORDER BY created, id",
                    rows::METHOD_COLUMNS
                );
                query_all(conn, &sql, [&user_id], rows::method)
            })
            .await?;
        let sealer = self.sealer();
        for method in &mut methods {
            seal::open_method(sealer, method)?;
        }
        Ok(methods)
    }

    async fn add_method(
        &self,
        method: &RegisteredMethod,
        audit: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let (mut method, audit) = (method.clone(), audit.clone());
        method.data = seal::seal_method_data(
            self.sealer(),
            method.kind,
            &method.user_id,
            &method.id,
            &method.data,
        );
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO methods (id, user_id, kind, display_name, created, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    method.id,
                    method.user_id,
                    method.kind.as_str(),
                    method.display_name,
                    rows::to_micros(method.created),
                    method.data,
                ])
            })
            .map_err(map_err)?;
            insert_audit(tx, &audit)
        })
        .await
    }

    async fn update_method_data(&self, method_id: &str, data: &str) -> Result<bool, StoreError> {
        let (method_id, data) = (method_id.to_owned(), data.to_owned());
        let sealer = self.secrets.clone();
        self.write(move |tx| {
            let Some((user_id, kind, _)) = method_owner(tx, &method_id)? else {
                return Ok(false);
            };
            let data = seal::seal_method_data(
                sealer.as_deref(),
                crate::store::codec::parse_kind(&kind)?,
                &user_id,
                &method_id,
                &data,
            );
            let updated = tx
                .prepare_cached("UPDATE methods SET data = ?1 WHERE id = ?2")
                .and_then(|mut stmt| stmt.execute([&data, &method_id]))
                .map_err(map_err)?;
            Ok(updated == 1)
        })
        .await
    }

    /// Records `audit` only when a method was deleted; the caller records a refusal itself.
    async fn delete_method(
        &self,
        user_id: &str,
        method_id: &str,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        self.conditional_with_audit(
            "DELETE FROM methods WHERE id = ?1 AND user_id = ?2",
            vec![method_id.to_owned().into(), user_id.to_owned().into()],
            audit,
        )
        .await
    }

    async fn method(&self, method_id: &str) -> Result<Option<RegisteredMethod>, StoreError> {
        let method_id = method_id.to_owned();
        let mut method = self
            .read(move |conn| {
                let sql = format!("SELECT {} FROM methods WHERE id = ?1", rows::METHOD_COLUMNS);
                Ok(query_all(conn, &sql, [&method_id], rows::method)?.pop())
            })
            .await?;
        if let Some(method) = &mut method {
            seal::open_method(self.sealer(), method)?;
        }
        Ok(method)
    }

    async fn swap_method_data(
        &self,
        method_id: &str,
        expected: &str,
        data: &str,
    ) -> Result<bool, StoreError> {
        let (method_id, expected, data) =
            (method_id.to_owned(), expected.to_owned(), data.to_owned());
        let sealer = self.secrets.clone();
        // A sealed value differs on every write (random nonce): compare what it opens to, and
        // write under the writer's lock, in the same transaction.
        self.write(move |tx| {
            let Some((user_id, kind, stored)) = method_owner(tx, &method_id)? else {
                return Ok(false);
            };
            let current = seal::open_method_data(sealer.as_deref(), &user_id, &method_id, &stored)?;
            if current != expected {
                return Ok(false);
            }
            let data = seal::seal_method_data(
                sealer.as_deref(),
                crate::store::codec::parse_kind(&kind)?,
                &user_id,
                &method_id,
                &data,
            );
            let updated = tx
                .prepare_cached("UPDATE methods SET data = ?1 WHERE id = ?2 AND data = ?3")
                .and_then(|mut stmt| stmt.execute([&data, &method_id, &stored]))
                .map_err(map_err)?;
            Ok(updated == 1)
        })
        .await
    }

    async fn create_web_session(
        &self,
        session: &WebSession,
        audit: Option<&NewAuditEvent>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (session, audit) = (session.clone(), audit.cloned());
        self.write(move |tx| {
            // Ceremonies of the expired sessions go with them (ON DELETE CASCADE).
            tx.prepare_cached("DELETE FROM web_sessions WHERE expires <= ?1")
                .and_then(|mut stmt| stmt.execute([rows::to_micros(now)]))
                .map_err(map_err)?;
            execute_with_session(
                tx,
                "INSERT INTO web_sessions (id_hash, user_id, created, expires, auth_method, \
                 tap_id, tap_expires, registration_deadline, interrupt_mode, csrf_token) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                &session,
            )?;
            match &audit {
                Some(event) => insert_audit(tx, event),
                None => Ok(()),
            }
        })
        .await
    }

    async fn web_session(&self, id_hash: &str) -> Result<Option<WebSession>, StoreError> {
        let id_hash = id_hash.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {} FROM web_sessions WHERE id_hash = ?1",
                rows::WEB_SESSION_COLUMNS
            );
            Ok(query_all(conn, &sql, [&id_hash], rows::web_session)?.pop())
        })
        .await
    }

    async fn update_web_session(&self, session: &WebSession) -> Result<bool, StoreError> {
        let session = session.clone();
        self.write(move |tx| {
            let updated = execute_with_session(
                tx,
                "UPDATE web_sessions SET user_id = ?2, created = ?3, expires = ?4, \
                 auth_method = ?5, tap_id = ?6, tap_expires = ?7, \
                 registration_deadline = ?8, interrupt_mode = ?9, csrf_token = ?10 \
                 WHERE id_hash = ?1",
                &session,
            )?;
            Ok(updated == 1)
        })
        .await
    }

    async fn delete_web_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let id_hash = id_hash.to_owned();
        self.write(move |tx| {
            let deleted = tx
                .prepare_cached("DELETE FROM web_sessions WHERE id_hash = ?1")
                .and_then(|mut stmt| stmt.execute([&id_hash]))
                .map_err(map_err)?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn put_web_ceremony(
        &self,
        ceremony: &WebCeremony,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut ceremony = ceremony.clone();
        ceremony.state = seal::seal_ceremony_state(self.sealer(), &ceremony);
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM web_ceremonies WHERE expires <= ?1")
                .and_then(|mut stmt| stmt.execute([rows::to_micros(now)]))
                .map_err(map_err)?;
            tx.prepare_cached(
                "INSERT INTO web_ceremonies (id, kind, session_id_hash, state, created, expires) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    ceremony.id,
                    ceremony.kind.as_str(),
                    ceremony.session_id_hash,
                    ceremony.state,
                    rows::to_micros(ceremony.created),
                    rows::to_micros(ceremony.expires),
                ])
            })
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn take_web_ceremony(&self, id: &str) -> Result<Option<WebCeremony>, StoreError> {
        let id = id.to_owned();
        let mut ceremony = self
            .write(move |tx| {
                let sql = format!(
                    "DELETE FROM web_ceremonies WHERE id = ?1 RETURNING {}",
                    rows::WEB_CEREMONY_COLUMNS
                );
                let mut stmt = tx.prepare_cached(&sql).map_err(map_err)?;
                let mut found = stmt.query([&id]).map_err(map_err)?;
                match found.next().map_err(map_err)? {
                    Some(row) => Ok(Some(rows::web_ceremony(row)?)),
                    None => Ok(None),
                }
            })
            .await?;
        if let Some(ceremony) = &mut ceremony {
            seal::open_ceremony(self.sealer(), ceremony)?;
        }
        Ok(ceremony)
    }

    async fn append_audit(&self, event: &NewAuditEvent) -> Result<(), StoreError> {
        let event = event.clone();
        self.write(move |tx| insert_audit(tx, &event)).await
    }

    async fn append_audits(&self, events: &[NewAuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        self.write(move |tx| audit_chain::insert(tx, &events)).await
    }

    async fn prune_audit(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let sealer = self.secrets.clone();
        self.write(move |tx| audit_chain::prune(tx, before, limit, sealer.as_deref()))
            .await
    }

    async fn audit_chain(&self) -> Result<crate::store::chain::ChainState, StoreError> {
        self.read(audit_chain::state).await
    }

    async fn audit_chain_rows(
        &self,
        from_seq: i64,
        to_seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::store::chain::ChainRow>, StoreError> {
        self.read(move |conn| audit_chain::chain_rows(conn, from_seq, to_seq, limit))
            .await
    }

    fn checkpoint_signature_holds(&self, checkpoint: &crate::store::chain::Checkpoint) -> bool {
        let message = crate::store::chain::Checkpoint::message(
            checkpoint.seq,
            &checkpoint.hash,
            checkpoint.count,
        );
        self.sealer().is_some_and(|s| {
            s.checkpoint_signature_holds(&message, &checkpoint.key_id, &checkpoint.mac)
        })
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let (sql, values) = audit_query(filter);
        self.read(move |conn| {
            query_all(
                conn,
                &sql,
                rusqlite::params_from_iter(values),
                rows::audit_event,
            )
        })
        .await
    }
}
