//! The PostgreSQL backend of [`Store`]: several tapd nodes share one database and behave as one
//! system.
//!
//! Shape: a deadpool pool of tokio-postgres connections (see `connect`), statements prepared
//! once per connection and cached. The semantics are the SQLite backend's, checked by the same
//! conformance suite: lookups by id, then UPN, then username; names compared
//! ASCII-case-insensitively (`lower()` under the "C" collation); an admin change and its audit
//! event in one transaction. Changes that depend on a condition — consuming a one-time TAP,
//! deleting a TAP or method of a given owner — are ONE statement: the conditional `UPDATE` or
//! `DELETE` and the audit `INSERT` in a data-modifying CTE, so of N callers on any number of
//! nodes exactly one wins, and only the winner is audited.
//!
//! Outages: every connection or server error is [`StoreError::Unavailable`] (the admin API
//! answers 503, RADIUS stays silent so clients fail over); a connection the server closed is
//! discarded when it returns to the pool, and the next caller opens a fresh one, so tapd
//! recovers by itself when PostgreSQL comes back.
//!
//! May depend on: `model`, `store`, `clock`. Connecting and TLS live in `connect`, the schema in
//! `schema`, row decoding in `rows`.
//!
//! Over 800 lines on purpose: the one `impl Store` block, method for method in the trait's
//! order, so that it can be read against the SQLite backend.

mod audit_chain;
mod connect;
mod identity;
mod outbox;
mod rows;
mod schema;
#[cfg(test)]
mod tests;

use crate::clock::{Clock, SystemClock};
use crate::logging::ErrorChain;
use crate::model::{WebCeremony, WebSession};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool, PoolError};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::model::{
    AuditEvent, AuditFilter, Group, GroupRef, MailOutcome, ManagerLink, NewAuditEvent, OutboxMail,
    RegisteredMethod, StoredTap, SyncStatus, TapPolicy, Timestamp, User,
};
use crate::store::seal::{self, Sealer};
use crate::store::{
    ClaimedCode, LeaseLost, Store, StoreError, SyncFence, SyncLease, SyncLeaseOutcome, SyncPlan,
};
use rows::{opt_text, text, to_db_time, WebSessionColumns};

pub use connect::{
    PostgresSettings, PostgresUrl, SslMode, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE,
    DEFAULT_STATEMENT_TIMEOUT,
};
pub use schema::SCHEMA_VERSION;

/// `audit()` returns this many events when the filter's limit is 0 (as on SQLite).
const AUDIT_DEFAULT_LIMIT: u32 = crate::store::sqlite::AUDIT_DEFAULT_LIMIT;
/// `audit()` never returns more than this many events (as on SQLite).
const AUDIT_MAX_LIMIT: u32 = crate::store::sqlite::AUDIT_MAX_LIMIT;

type Param<'a> = &'a (dyn ToSql + Sync);

/// Maps a driver error: anything from the server or the connection is `Unavailable` (a retry
/// may work; constraint failures, too, are conditions of the moment, as on SQLite).
pub(crate) fn map_err(err: tokio_postgres::Error) -> StoreError {
    if let Some(db) = err.as_db_error() {
        let message = format!(
            "PostgreSQL refused the request: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        );
        return StoreError::unavailable_from(message, err);
    }
    if err.is_closed() {
        return StoreError::unavailable_from("the connection to PostgreSQL was lost", err);
    }
    StoreError::unavailable_from(format!("PostgreSQL can't be reached: {err}"), err)
}

fn pool_err(err: PoolError) -> StoreError {
    match err {
        PoolError::Timeout(_) => StoreError::unavailable(
            "PostgreSQL can't be reached: timed out waiting for a connection".to_owned(),
        ),
        PoolError::Backend(e) => {
            let message = format!("PostgreSQL can't be reached: {}", ErrorChain(&e));
            StoreError::unavailable_from(message, e)
        }
        PoolError::PostCreateHook(e) => {
            StoreError::unavailable_from(format!("PostgreSQL session setup failed: {e}"), e)
        }
        PoolError::Closed | PoolError::NoRuntimeSpecified => {
            StoreError::unavailable("the PostgreSQL connection pool is closed".to_owned())
        }
    }
}

/// The PostgreSQL [`Store`].
pub struct PostgresStore {
    pool: Pool,
    /// Whether the last attempt to get a connection worked; an outage and the recovery are
    /// each logged once.
    reachable: AtomicBool,
    /// Seals authenticator-app secrets ([`seal`]); `None` only for a store opened without
    /// [`PostgresStore::with_secrets`] (tests of other parts): secrets are then kept as given.
    secrets: Option<Arc<Sealer>>,
    /// Stamps what the store audits on its own when no caller's event gives the time (the
    /// identity conflicts of a sync applied without events); [`PostgresStore::with_clock`].
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("pool_size", &status.size)
            .field("pool_max", &status.max_size)
            .finish()
    }
}

impl PostgresStore {
    /// Connects (one connection, to migrate) and brings the schema to [`SCHEMA_VERSION`];
    /// further connections are opened as needed, up to `settings.pool_size`.
    ///
    /// Fails with [`StoreError::SchemaTooNew`] when a newer tapd migrated the database, and
    /// with [`StoreError::Unavailable`] when PostgreSQL can't be reached.
    pub async fn open(settings: &PostgresSettings) -> Result<PostgresStore, StoreError> {
        let pool = connect::build_pool(settings)?;
        let mut client = pool.get().await.map_err(pool_err)?;
        schema::migrate(&mut client).await?;
        identity::backfill_keys(&**client).await?;
        Ok(PostgresStore {
            pool,
            reachable: AtomicBool::new(true),
            secrets: None,
            clock: Arc::new(SystemClock),
        })
    }

    /// Reads the time from `clock` (the daemon's, or a test's manual one) instead of the
    /// system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> PostgresStore {
        self.clock = clock;
        self
    }

    /// Seals every secret the store holds with `sealer` from now on, and seals, in one
    /// transaction, the ones found in clear (written before tapd sealed them) or under the
    /// previous key (a rotation): idempotent, and safe while other nodes run (each row is
    /// rewritten only if it still holds what was read). Fails, changing nothing, when a row was
    /// sealed under a key `sealer` does not hold, naming it: every node must share one key.
    pub async fn with_secrets(mut self, sealer: Sealer) -> Result<PostgresStore, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let mut resealed = 0;
        let methods = tx
            .query(
                "SELECT id, user_id, data FROM methods WHERE kind = $1",
                &[&crate::model::MethodKind::SoftwareOath.as_str()],
            )
            .await
            .map_err(map_err)?;
        for row in methods {
            let (id, user_id, data): (String, String, String) = (
                rows::col(&row, 0)?,
                rows::col(&row, 1)?,
                rows::col(&row, 2)?,
            );
            let what = format!("method {id} (user {user_id})");
            let aad = seal::method_row(&user_id, &id);
            if let Some(sealed) = seal::reseal(&sealer, &data, &aad, &what)? {
                resealed += tx_execute(
                    &tx,
                    "UPDATE methods SET data = $1 WHERE id = $2 AND data = $3",
                    &[&sealed, &id, &data],
                )
                .await?;
            }
        }
        let ceremonies = tx
            .query(
                "SELECT id, state FROM web_ceremonies WHERE kind = $1",
                &[&crate::model::CeremonyKind::TotpEnrolment.as_str()],
            )
            .await
            .map_err(map_err)?;
        for row in ceremonies {
            let (id, state): (String, String) = (rows::col(&row, 0)?, rows::col(&row, 1)?);
            let what = format!("ceremony {id}");
            if let Some(sealed) = seal::reseal(&sealer, &state, &seal::ceremony_row(&id), &what)? {
                resealed += tx_execute(
                    &tx,
                    "UPDATE web_ceremonies SET state = $1 WHERE id = $2 AND state = $3",
                    &[&sealed, &id, &state],
                )
                .await?;
            }
        }
        // Codes waiting in the onboarding outbox.
        let queued = tx
            .query(
                "SELECT id, sealed_code FROM outbox WHERE sealed_code IS NOT NULL",
                &[],
            )
            .await
            .map_err(map_err)?;
        for row in queued {
            let (id, code): (String, String) = (rows::col(&row, 0)?, rows::col(&row, 1)?);
            // Never stored in clear: a value that is not sealed was written behind tapd's
            // back, and sealing it would mail it as a code. The outbox worker fails it.
            if !seal::is_sealed(&code) {
                continue;
            }
            let what = format!("outbox message {id}");
            if let Some(sealed) = seal::reseal(&sealer, &code, &seal::outbox_row(&id), &what)? {
                resealed += tx_execute(
                    &tx,
                    "UPDATE outbox SET sealed_code = $1 WHERE id = $2 AND sealed_code = $3",
                    &[&sealed, &id, &code],
                )
                .await?;
            }
        }
        tx.commit().await.map_err(map_err)?;
        drop(client);
        if resealed > 0 {
            log::info!(
                "store: sealed {resealed} authenticator secret(s) under secrets key {}",
                sealer.key_id()
            );
        }
        self.secrets = Some(Arc::new(sealer));
        Ok(self)
    }

    fn sealer(&self) -> Option<&Sealer> {
        self.secrets.as_deref()
    }

    /// The owner, kind and stored data of a method; `None` when it is gone.
    async fn method_owner(
        &self,
        method_id: &str,
    ) -> Result<Option<(String, crate::model::MethodKind, String)>, StoreError> {
        let rows = self
            .query(
                "SELECT user_id, kind, data FROM methods WHERE id = $1",
                &[&text(method_id)],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let kind: String = rows::col(row, 1)?;
        let kind = crate::store::codec::parse_kind(&kind)?;
        Ok(Some((rows::col(row, 0)?, kind, rows::col(row, 2)?)))
    }

    /// The TLS version protecting a connection of this store (`"TLSv1.3"`), or `None` when it
    /// is not encrypted; as the server sees it (`pg_stat_ssl`).
    pub async fn connection_tls(&self) -> Result<Option<String>, StoreError> {
        let rows = self
            .query(
                "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
                &[],
            )
            .await?;
        match rows.first() {
            Some(row) => Ok(Some(rows::col(row, 0)?)),
            None => Ok(None),
        }
    }

    async fn client(&self) -> Result<Object, StoreError> {
        match self.pool.get().await {
            Ok(client) => {
                if !self.reachable.swap(true, Ordering::Relaxed) {
                    log::info!("PostgreSQL store reachable again");
                }
                Ok(client)
            }
            Err(e) => {
                let err = pool_err(e);
                if self.reachable.swap(false, Ordering::Relaxed) {
                    log::error!(
                        "{}; requests that need the store fail until it is back",
                        ErrorChain(&err)
                    );
                }
                Err(err)
            }
        }
    }

    /// Runs one statement (its own transaction) and returns its rows.
    async fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(map_err)?;
        client.query(&statement, params).await.map_err(map_err)
    }

    /// Runs one statement and decodes every row.
    async fn query_all<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        decode: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.query(sql, params).await?.iter().map(decode).collect()
    }

    /// Runs one statement and returns the number of rows it changed.
    async fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(map_err)?;
        client.execute(&statement, params).await.map_err(map_err)
    }

    /// Runs a statement that changes something when its condition holds (`hit`: a `… RETURNING`
    /// statement) and, in the same transaction, records `audit` only if it did: true when it
    /// did. The change takes its row locks before the audit insert takes the chain head's.
    async fn conditional_with_audit(
        &self,
        change: &str,
        params: &[Param<'_>],
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let sql = format!("WITH hit AS ({change}) SELECT count(*) FROM hit");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let statement = tx.prepare_cached(&sql).await.map_err(map_err)?;
        let rows = tx.query(&statement, params).await.map_err(map_err)?;
        let changed: i64 = match rows.first() {
            Some(row) => rows::col(row, 0)?,
            None => 0,
        };
        if changed > 0 {
            tx_audit(&tx, std::slice::from_ref(audit)).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(changed > 0)
    }
}

/// Runs one statement inside a transaction.
async fn tx_execute(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> Result<u64, StoreError> {
    let statement = tx.prepare_cached(sql).await.map_err(map_err)?;
    tx.execute(&statement, params).await.map_err(map_err)
}

/// Deletes the user's TAP and inserts `tap` in its place; the id of the one replaced.
async fn tx_replace_tap(
    tx: &deadpool_postgres::Transaction<'_>,
    tap: &StoredTap,
) -> Result<Option<String>, StoreError> {
    let (id, user_id, code_hash) = (text(&tap.id), text(&tap.user_id), text(&tap.code_hash));
    let lifetime = i64::from(tap.lifetime_in_minutes);
    let created = to_db_time(tap.created);
    let start = to_db_time(tap.start);
    let used_at = tap.used_at.map(to_db_time);
    let code_length = tap
        .code_length
        .map(|n| i32::try_from(n).unwrap_or(i32::MAX));
    // Two replacements for one user queue on the user's row, so the second one sees (and
    // deletes) the TAP the first one inserted, as SQLite's serialised writers would.
    tx_execute(
        tx,
        "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE",
        &[&user_id],
    )
    .await?;
    let statement = tx
        .prepare_cached("DELETE FROM taps WHERE user_id = $1 RETURNING id")
        .await
        .map_err(map_err)?;
    let replaced: Option<String> = match tx
        .query(&statement, &[&user_id])
        .await
        .map_err(map_err)?
        .first()
    {
        Some(row) => Some(rows::col(row, 0)?),
        None => None,
    };
    tx_execute(
        tx,
        "INSERT INTO taps (id, user_id, code_hash, created, start, lifetime_in_minutes, \
         is_usable_once, used_at, code_length) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &id,
            &user_id,
            &code_hash,
            &created,
            &start,
            &lifetime,
            &tap.is_usable_once,
            &used_at,
            &code_length,
        ],
    )
    .await?;
    Ok(replaced)
}

/// Inserts audit events inside a transaction, in order.
/// Inserts audit events inside a transaction, in order, as the next links of the audit chain
/// (holding the chain head's lock until the transaction ends).
async fn tx_audit(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[NewAuditEvent],
) -> Result<(), StoreError> {
    audit_chain::insert(tx, events).await
}

/// The fence check of a sync's transaction, its last statement before the commit: locks the
/// lease row (a node taking the lease over waits for this commit) and compares it with `fence`
/// by the database's clock at this moment (`clock_timestamp()`, not the transaction's start).
async fn tx_check_fence(
    tx: &deadpool_postgres::Transaction<'_>,
    fence: &SyncFence,
) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached(
            "SELECT holder, epoch, expires <= clock_timestamp() FROM sync_lease \
             WHERE id = 1 FOR UPDATE",
        )
        .await
        .map_err(map_err)?;
    let rows = tx.query(&statement, &[]).await.map_err(map_err)?;
    let current = match rows.first() {
        Some(row) => Some(lease_state(row)?),
        None => None,
    };
    LeaseLost::check(fence, current).map_err(StoreError::LeaseLost)
}

/// `(holder, epoch, lapsed)` of a lease row read as `holder, epoch, expires <= clock_timestamp()`.
fn lease_state(row: &Row) -> Result<(String, u64, bool), StoreError> {
    Ok((rows::col(row, 0)?, epoch(row, 1)?, rows::col(row, 2)?))
}

fn epoch(row: &Row, index: usize) -> Result<u64, StoreError> {
    let epoch: i64 = rows::col(row, index)?;
    u64::try_from(epoch).map_err(|_| StoreError::corrupt(format!("sync lease epoch {epoch}")))
}

/// A lease row read as `holder, expires, epoch`.
fn lease(row: &Row) -> Result<SyncLease, StoreError> {
    Ok(SyncLease {
        holder: rows::col(row, 0)?,
        expires: rows::col(row, 1)?,
        epoch: epoch(row, 2)?,
    })
}

/// A lease duration in whole milliseconds (at least one), for `… * interval '1 millisecond'`.
fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis())
        .unwrap_or(i64::MAX / 2)
        .max(1)
}

/// Writes a single-row JSON table (`policy`, `sync_status`).
fn put_singleton_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (id, body) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET body = excluded.body"
    )
}

/// Keeps the last of several entries with the same id, in first-seen order: SQLite applies a
/// plan's upserts one by one (the last wins), while one PostgreSQL `INSERT … ON CONFLICT` may
/// not touch a row twice.
fn last_by_id<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<&T> {
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<&T> = Vec::new();
    for item in items {
        match position.get(id(item)) {
            Some(&i) => out[i] = item,
            None => {
                position.insert(id(item), out.len());
                out.push(item);
            }
        }
    }
    out
}

fn owned_text(s: &str) -> String {
    text(s).into_owned()
}

/// Builds the audit query for the filter's present conditions only (as the SQLite backend).
fn audit_query(filter: &AuditFilter) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(since) = filter.since {
        values.push(Box::new(rows::to_db_bound(since)));
        conditions.push(format!("time >= ${}", values.len()));
    }
    if let Some(until) = filter.until {
        values.push(Box::new(rows::to_db_bound(until)));
        conditions.push(format!("time < ${}", values.len()));
    }
    if let Some(user) = &filter.user {
        values.push(Box::new(owned_text(user)));
        let n = values.len();
        conditions.push(format!(
            "(lower(actor) = lower(${n}::text COLLATE \"C\") \
             OR lower(target) = lower(${n}::text COLLATE \"C\"))"
        ));
    }
    if let Some(activity) = &filter.activity {
        values.push(Box::new(owned_text(activity)));
        conditions.push(format!(
            "strpos(lower(activity), lower(${}::text COLLATE \"C\")) > 0",
            values.len()
        ));
    }
    let limit = match filter.limit {
        0 => AUDIT_DEFAULT_LIMIT,
        n => n.min(AUDIT_MAX_LIMIT),
    };
    values.push(Box::new(i64::from(limit)));
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {} FROM audit {where_clause} ORDER BY time DESC, id DESC LIMIT ${}",
        rows::AUDIT_COLUMNS,
        values.len()
    );
    (sql, values)
}

#[async_trait]
impl Store for PostgresStore {
    async fn policy(&self) -> Result<TapPolicy, StoreError> {
        let rows = self
            .query("SELECT body FROM policy WHERE id = 1", &[])
            .await?;
        match rows.first() {
            Some(row) => rows::from_json("policy", rows::col::<&str>(row, 0)?),
            None => Ok(TapPolicy::default()),
        }
    }

    async fn put_policy(
        &self,
        policy: &TapPolicy,
        audit: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let body = rows::to_json(policy)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx_execute(&tx, &put_singleton_sql("policy"), &[&body]).await?;
        tx_audit(&tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn user(&self, key: &str) -> Result<Option<User>, StoreError> {
        let folded = owned_text(&crate::model::name_key(key));
        let key = text(key);
        let sql = format!(
            "SELECT {}, {} FROM users u WHERE {}",
            rows::USER_COLUMNS,
            identity::CLAIM_COLUMNS,
            identity::LOOKUP
        );
        let candidates = self
            .query_all(&sql, &[&key, &folded], identity::user_and_claims)
            .await?;
        Ok(crate::store::identity::choose(&key, candidates))
    }

    async fn quarantined_users(&self) -> Result<Vec<User>, StoreError> {
        let sql = format!(
            "SELECT {} FROM users u WHERE u.identity_conflict IS NOT NULL \
             ORDER BY lower(u.username), u.username, u.id",
            rows::USER_COLUMNS
        );
        self.query_all(&sql, &[], rows::user).await
    }

    async fn user_with_group_refs(
        &self,
        key: &str,
    ) -> Result<Option<(User, Vec<GroupRef>)>, StoreError> {
        let folded = owned_text(&crate::model::name_key(key));
        let key = text(key);
        // One statement, one snapshot: every candidate the name could mean, with its groups'
        // names; the rules of `identity::choose` pick one.
        let sql = format!(
            "SELECT {}, {}, coalesce(gr.ids, '{{}}'), coalesce(gr.dns, '{{}}'), \
             coalesce(gr.names, '{{}}') \
             FROM users u LEFT JOIN LATERAL (\
               SELECT array_agg(g.id ORDER BY lower(g.display_name), g.display_name, g.id) ids, \
                      array_agg(g.dn ORDER BY lower(g.display_name), g.display_name, g.id) dns, \
                      array_agg(g.display_name \
                                ORDER BY lower(g.display_name), g.display_name, g.id) names \
               FROM user_groups ug JOIN \"groups\" g ON g.id = ug.group_id \
               WHERE ug.user_id = u.id) gr ON true \
             WHERE {}",
            rows::USER_COLUMNS,
            identity::CLAIM_COLUMNS,
            identity::LOOKUP
        );
        let candidates = self
            .query_all(&sql, &[&key, &folded], |row| {
                let found = rows::user_with_group_refs(row)?;
                let claims = identity::claims(row, &found.0)?;
                Ok((found, claims))
            })
            .await?;
        Ok(crate::store::identity::choose(&key, candidates))
    }

    async fn users(&self, search: Option<&str>) -> Result<Vec<User>, StoreError> {
        let order = "ORDER BY lower(u.username), u.username, u.id";
        match search {
            None => {
                let sql = format!("SELECT {} FROM users u {order}", rows::USER_COLUMNS);
                self.query_all(&sql, &[], rows::user).await
            }
            Some(needle) => {
                let needle = text(needle);
                let sql = format!(
                    "SELECT {} FROM users u \
                     WHERE strpos(lower(u.username), lower($1::text COLLATE \"C\")) > 0 \
                     OR strpos(lower(u.upn), lower($1::text COLLATE \"C\")) > 0 \
                     OR strpos(lower(u.display_name), lower($1::text COLLATE \"C\")) > 0 \
                     OR strpos(lower(coalesce(u.mail, '')), lower($1::text COLLATE \"C\")) > 0 \
                     {order}",
                    rows::USER_COLUMNS
                );
                self.query_all(&sql, &[&needle], rows::user).await
            }
        }
    }

    async fn groups(&self) -> Result<Vec<Group>, StoreError> {
        let sql = format!(
            "SELECT {} FROM \"groups\" g ORDER BY lower(g.display_name), g.display_name, g.id",
            rows::GROUP_COLUMNS
        );
        self.query_all(&sql, &[], rows::group).await
    }

    async fn groups_by_id(&self, ids: &[String]) -> Result<Vec<Group>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(|id| owned_text(id)).collect();
        let sql = format!(
            "SELECT {} FROM \"groups\" g WHERE g.id = ANY($1::text[]) \
             ORDER BY lower(g.display_name), g.display_name, g.id",
            rows::GROUP_COLUMNS
        );
        self.query_all(&sql, &[&ids], rows::group).await
    }

    async fn apply_sync(
        &self,
        fence: &SyncFence,
        plan: &SyncPlan,
        audit: &[NewAuditEvent],
    ) -> Result<(), StoreError> {
        // Each kind of change is one set-based statement over arrays, in the SQLite backend's
        // order: groups, users and their memberships, deleted users, deleted groups, revoked
        // TAPs, audit.
        let groups = last_by_id(&plan.upsert_groups, |g| &g.id);
        let group_ids: Vec<String> = groups.iter().map(|g| owned_text(&g.id)).collect();
        let group_dns: Vec<String> = groups.iter().map(|g| owned_text(&g.dn)).collect();
        let group_names: Vec<String> = groups.iter().map(|g| owned_text(&g.display_name)).collect();

        let users = last_by_id(&plan.upsert_users, |u| &u.id);
        let user_ids: Vec<String> = users.iter().map(|u| owned_text(&u.id)).collect();
        let user_dns: Vec<String> = users.iter().map(|u| owned_text(&u.dn)).collect();
        let usernames: Vec<String> = users.iter().map(|u| owned_text(&u.username)).collect();
        let upns: Vec<String> = users
            .iter()
            .map(|u| owned_text(&u.user_principal_name))
            .collect();
        let display_names: Vec<String> =
            users.iter().map(|u| owned_text(&u.display_name)).collect();
        let mails: Vec<Option<String>> = users
            .iter()
            .map(|u| opt_text(&u.mail).map(Cow::into_owned))
            .collect();
        let enabled: Vec<bool> = users.iter().map(|u| u.account_enabled).collect();
        let manager_dns: Vec<Option<String>> = users
            .iter()
            .map(|u| opt_text(&u.manager_dn).map(Cow::into_owned))
            .collect();
        let dates: Vec<Option<String>> = users
            .iter()
            .map(|u| crate::store::codec::dates_json(&u.dates))
            .collect::<Result<_, _>>()?;
        let (username_keys, upn_keys): (Vec<String>, Vec<String>) = users
            .iter()
            .map(|u| {
                let (a, b) = crate::store::identity::keys_of(u);
                (owned_text(&a), owned_text(&b))
            })
            .unzip();
        let written: std::collections::BTreeSet<String> =
            username_keys.iter().chain(&upn_keys).cloned().collect();
        let (member_users, member_groups): (Vec<String>, Vec<String>) = users
            .iter()
            .flat_map(|u| {
                u.group_ids
                    .iter()
                    .map(|g| (owned_text(&u.id), owned_text(g)))
            })
            .unzip();

        let delete_users: Vec<String> = plan
            .delete_user_ids
            .iter()
            .map(|id| owned_text(id))
            .collect();
        let delete_groups: Vec<String> = plan
            .delete_group_ids
            .iter()
            .map(|id| owned_text(id))
            .collect();
        let revoke: Vec<String> = plan
            .revoke_tap_user_ids
            .iter()
            .map(|id| owned_text(id))
            .collect();

        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let epoch = identity::write_epoch(&tx).await?;
        if !group_ids.is_empty() {
            tx_execute(
                &tx,
                "INSERT INTO \"groups\" (id, dn, display_name) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
                 ON CONFLICT (id) DO UPDATE SET dn = excluded.dn, \
                 display_name = excluded.display_name",
                &[&group_ids, &group_dns, &group_names],
            )
            .await?;
        }
        if !user_ids.is_empty() {
            // Updated in place (never delete + insert, which would cascade away the TAP and
            // methods), memberships replaced.
            // A claim keeps its epoch while the name stays the same.
            tx_execute(
                &tx,
                "INSERT INTO users (id, dn, username, upn, display_name, mail, account_enabled, \
                 username_key, upn_key, manager_dn, dates, username_since, upn_since) \
                 SELECT *, $10::bigint, $10::bigint FROM unnest($1::text[], $2::text[], \
                 $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::text[], \
                 $9::text[], $11::text[], $12::text[]) \
                 ON CONFLICT (id) DO UPDATE SET dn = excluded.dn, \
                 username = excluded.username, upn = excluded.upn, \
                 display_name = excluded.display_name, mail = excluded.mail, \
                 account_enabled = excluded.account_enabled, \
                 username_key = excluded.username_key, upn_key = excluded.upn_key, \
                 manager_id = CASE WHEN users.manager_dn IS NOT DISTINCT FROM \
                 excluded.manager_dn THEN users.manager_id ELSE NULL END, \
                 manager_dn = excluded.manager_dn, dates = excluded.dates, \
                 username_since = CASE WHEN users.username_key IS NOT DISTINCT FROM \
                 excluded.username_key THEN users.username_since ELSE excluded.username_since END, \
                 upn_since = CASE WHEN users.upn_key IS NOT DISTINCT FROM excluded.upn_key \
                 THEN users.upn_since ELSE excluded.upn_since END",
                &[
                    &user_ids,
                    &user_dns,
                    &usernames,
                    &upns,
                    &display_names,
                    &mails,
                    &enabled,
                    &username_keys,
                    &upn_keys,
                    &epoch,
                    &manager_dns,
                    &dates,
                ],
            )
            .await?;
            tx_execute(
                &tx,
                "DELETE FROM user_groups WHERE user_id = ANY($1::text[])",
                &[&user_ids],
            )
            .await?;
            if !member_users.is_empty() {
                tx_execute(
                    &tx,
                    "INSERT INTO user_groups (user_id, group_id) \
                     SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
                    &[&member_users, &member_groups],
                )
                .await?;
            }
        }
        if !delete_users.is_empty() {
            // Memberships, TAP and methods go with the user (ON DELETE CASCADE).
            tx_execute(
                &tx,
                "DELETE FROM users WHERE id = ANY($1::text[])",
                &[&delete_users],
            )
            .await?;
        }
        if !delete_groups.is_empty() {
            // Memberships stay as the users' group_ids say (as on SQLite).
            tx_execute(
                &tx,
                "DELETE FROM \"groups\" WHERE id = ANY($1::text[])",
                &[&delete_groups],
            )
            .await?;
        }
        if !revoke.is_empty() {
            tx_execute(
                &tx,
                "DELETE FROM taps WHERE user_id = ANY($1::text[])",
                &[&revoke],
            )
            .await?;
        }
        tx_audit(&tx, audit).await?;
        let template = crate::store::identity::event_template(audit, &*self.clock);
        let conflicts = identity::check_conflicts(&tx, &written, &template).await?;
        tx_audit(&tx, &conflicts).await?;
        tx_check_fence(&tx, fence).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn sync_status(&self) -> Result<SyncStatus, StoreError> {
        let rows = self
            .query("SELECT body FROM sync_status WHERE id = 1", &[])
            .await?;
        match rows.first() {
            Some(row) => rows::from_json("sync status", rows::col::<&str>(row, 0)?),
            None => Ok(SyncStatus::default()),
        }
    }

    async fn put_sync_status(
        &self,
        fence: &SyncFence,
        status: &SyncStatus,
        audit: &[NewAuditEvent],
    ) -> Result<(), StoreError> {
        let body = rows::to_json(status)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx_execute(&tx, &put_singleton_sql("sync_status"), &[&body]).await?;
        tx_audit(&tx, audit).await?;
        tx_check_fence(&tx, fence).await?;
        tx.commit().await.map_err(map_err)
    }

    /// A lease row, taken with one `INSERT … ON CONFLICT DO UPDATE … WHERE`: the row lock makes
    /// concurrent askers queue, and each re-checks the condition against the row the one before
    /// it left. A row (rather than a session advisory lock) survives a lost connection and lets
    /// another node take over once it expires after its holder died. Every time is
    /// `clock_timestamp()`, the database server's clock when the statement runs.
    async fn try_sync_lease(
        &self,
        node: &str,
        ttl: Duration,
    ) -> Result<SyncLeaseOutcome, StoreError> {
        let node = owned_text(node);
        let ttl = ttl_millis(ttl);
        // A lease released between the two statements below is asked for once more.
        for _ in 0..2 {
            let granted = self
                .query(
                    "INSERT INTO sync_lease (id, holder, acquired, expires, epoch) \
                     VALUES (1, $1, clock_timestamp(), \
                     clock_timestamp() + $2::bigint * interval '1 millisecond', 1) \
                     ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, \
                     acquired = CASE WHEN sync_lease.holder = excluded.holder \
                     AND sync_lease.expires > clock_timestamp() \
                     THEN sync_lease.acquired ELSE excluded.acquired END, \
                     epoch = CASE WHEN sync_lease.holder = excluded.holder \
                     AND sync_lease.expires > clock_timestamp() \
                     THEN sync_lease.epoch ELSE sync_lease.epoch + 1 END, \
                     expires = excluded.expires \
                     WHERE sync_lease.holder = excluded.holder \
                     OR sync_lease.expires <= clock_timestamp() \
                     RETURNING holder, expires, epoch",
                    &[&node, &ttl],
                )
                .await?;
            if let Some(row) = granted.first() {
                return Ok(SyncLeaseOutcome::Granted(lease(row)?));
            }
            let held = self
                .query(
                    "SELECT holder, expires, epoch FROM sync_lease WHERE id = 1",
                    &[],
                )
                .await?;
            if let Some(row) = held.first() {
                return Ok(SyncLeaseOutcome::HeldElsewhere(lease(row)?));
            }
        }
        Err(StoreError::unavailable(
            "the directory sync lease changed hands too quickly; try again".to_owned(),
        ))
    }

    async fn renew_sync_lease(
        &self,
        fence: &SyncFence,
        ttl: Duration,
    ) -> Result<SyncLease, StoreError> {
        let holder = owned_text(&fence.holder);
        let token = i64::try_from(fence.epoch).unwrap_or(i64::MAX);
        let renewed = self
            .query(
                "UPDATE sync_lease SET \
                 expires = clock_timestamp() + $3::bigint * interval '1 millisecond' \
                 WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires > clock_timestamp() \
                 RETURNING holder, expires, epoch",
                &[&holder, &token, &ttl_millis(ttl)],
            )
            .await?;
        if let Some(row) = renewed.first() {
            return lease(row);
        }
        let current = self
            .query(
                "SELECT holder, epoch, expires <= clock_timestamp() FROM sync_lease WHERE id = 1",
                &[],
            )
            .await?;
        let current = match current.first() {
            Some(row) => Some(lease_state(row)?),
            None => None,
        };
        match LeaseLost::check(fence, current) {
            // Renewed by nobody yet valid: it lapsed between the two statements.
            Ok(()) => Err(StoreError::LeaseLost(LeaseLost {
                token: fence.epoch,
                current: fence.epoch,
                holder: Some(fence.holder.clone()),
                lapsed: true,
            })),
            Err(lost) => Err(StoreError::LeaseLost(lost)),
        }
    }

    async fn release_sync_lease(&self, fence: &SyncFence) -> Result<(), StoreError> {
        let holder = text(&fence.holder);
        let token = i64::try_from(fence.epoch).unwrap_or(i64::MAX);
        self.execute(
            "UPDATE sync_lease SET expires = clock_timestamp() \
             WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires > clock_timestamp()",
            &[&holder, &token],
        )
        .await?;
        Ok(())
    }

    async fn tap_for_user(&self, user_id: &str) -> Result<Option<StoredTap>, StoreError> {
        let user_id = text(user_id);
        let sql = format!("SELECT {} FROM taps WHERE user_id = $1", rows::TAP_COLUMNS);
        let mut found = self.query_all(&sql, &[&user_id], rows::tap).await?;
        Ok(found.pop())
    }

    async fn replace_tap(
        &self,
        tap: &StoredTap,
        audit: &NewAuditEvent,
    ) -> Result<Option<String>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let replaced = tx_replace_tap(&tx, tap).await?;
        tx_audit(&tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(replaced)
    }

    /// Records `audit` only when a TAP was deleted; the caller records a refusal itself.
    async fn delete_tap(
        &self,
        user_id: &str,
        tap_id: &str,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let (user_id, tap_id) = (text(user_id), text(tap_id));
        self.conditional_with_audit(
            "DELETE FROM taps WHERE id = $1 AND user_id = $2 RETURNING 1",
            &[&tap_id, &user_id],
            audit,
        )
        .await
    }

    async fn consume_one_time_tap(
        &self,
        tap_id: &str,
        now: Timestamp,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let tap_id = text(tap_id);
        let now = to_db_time(now);
        // Under READ COMMITTED a second caller waits for the first one's row lock, then
        // re-checks `used_at IS NULL` against the committed row: exactly one wins.
        self.conditional_with_audit(
            "UPDATE taps SET used_at = $1 \
             WHERE id = $2 AND is_usable_once AND used_at IS NULL RETURNING 1",
            &[&now, &tap_id],
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
        let sealer = self.sealer().ok_or_else(outbox::no_secrets_key)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        if !outbox::issue(&tx, sealer, tap, mail, code, grant).await? {
            return Ok(false);
        }
        tx_replace_tap(&tx, tap).await?;
        tx_audit(&tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn claim_mail(
        &self,
        node: &str,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Option<(OutboxMail, ClaimedCode)>, StoreError> {
        let sealer = self.sealer().ok_or_else(outbox::no_secrets_key)?;
        let client = self.client().await?;
        outbox::claim(&client, sealer, node, now, lease).await
    }

    async fn finish_mail(
        &self,
        id: &str,
        node: &str,
        now: Timestamp,
        outcome: &MailOutcome,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        if !outbox::finish(&tx, id, node, now, outcome).await? {
            return Ok(false);
        }
        tx_audit(&tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn mails(&self, limit: u32) -> Result<Vec<OutboxMail>, StoreError> {
        let sql = format!(
            "SELECT {} FROM outbox ORDER BY created DESC, id LIMIT $1",
            outbox::COLUMNS
        );
        self.query_all(&sql, &[&i64::from(limit)], outbox::listed)
            .await
    }

    async fn onboarding_baseline(
        &self,
        rule: &str,
        user_ids: &[String],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let rule = text(rule);
        let ids: Vec<Cow<'_, str>> = user_ids.iter().map(|id| text(id)).collect();
        self.execute(
            "INSERT INTO onboarding_grants (rule, user_id, granted) \
             SELECT $1, id, $3 FROM unnest($2::text[]) AS id ON CONFLICT DO NOTHING",
            &[&rule, &ids, &to_db_time(now)],
        )
        .await?;
        Ok(())
    }

    async fn manager_links(&self) -> Result<Vec<ManagerLink>, StoreError> {
        self.query_all(
            "SELECT id, dn, upn, manager_dn, manager_id FROM users ORDER BY id",
            &[],
            |row| {
                Ok(ManagerLink {
                    id: rows::col(row, 0)?,
                    dn: rows::col(row, 1)?,
                    user_principal_name: rows::col(row, 2)?,
                    manager_dn: rows::col(row, 3)?,
                    manager_id: rows::col(row, 4)?,
                })
            },
        )
        .await
    }

    async fn set_manager_ids(
        &self,
        changes: &[(String, Option<String>)],
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let ids: Vec<Cow<'_, str>> = changes.iter().map(|(id, _)| text(id)).collect();
        let managers: Vec<Option<Cow<'_, str>>> = changes
            .iter()
            .map(|(_, manager)| opt_text(manager))
            .collect();
        self.execute(
            "UPDATE users SET manager_id = c.manager_id \
             FROM unnest($1::text[], $2::text[]) AS c(id, manager_id) WHERE users.id = c.id",
            &[&ids, &managers],
        )
        .await?;
        Ok(())
    }

    async fn onboarding_granted(
        &self,
        rule: &str,
        user_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let rule = text(rule);
        let ids: Vec<Cow<'_, str>> = user_ids.iter().map(|id| text(id)).collect();
        let rows = self
            .query(
                "SELECT user_id FROM onboarding_grants WHERE rule = $1 AND user_id = ANY($2)",
                &[&rule, &ids],
            )
            .await?;
        rows.iter().map(|row| rows::col(row, 0)).collect()
    }

    async fn note_onboarding_failure(
        &self,
        rule: &str,
        user_id: &str,
        reason: &str,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        // Two nodes noting at once: the second waits for the first's row and, finding the
        // same reason, changes nothing.
        let news = tx_execute(
            &tx,
            "INSERT INTO onboarding_failures (rule, user_id, reason, noted) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (rule, user_id) DO UPDATE \
             SET reason = excluded.reason, noted = excluded.noted \
             WHERE onboarding_failures.reason IS DISTINCT FROM excluded.reason",
            &[
                &text(rule),
                &text(user_id),
                &text(reason),
                &to_db_time(audit.time),
            ],
        )
        .await?;
        if news == 0 {
            return Ok(false);
        }
        tx_audit(&tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn users_dated_between(
        &self,
        attribute: &str,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<String>, StoreError> {
        let attribute = text(attribute);
        let (low, high) = crate::store::codec::sortable_window(from, to).unzip();
        // The key is a parameter (no path to escape); the text is compared byte by byte
        // (COLLATE "C": a locale's collation may weigh '-' differently), narrowed by text
        // order as `sortable_window` explains, and decided exactly below.
        let rows = self
            .query(
                "SELECT id, d FROM (SELECT id, dates::jsonb ->> $1::text AS d \
                 FROM users WHERE dates IS NOT NULL) AS dated \
                 WHERE d IS NOT NULL AND ($2::text IS NULL \
                 OR (d COLLATE \"C\" >= $2 AND d COLLATE \"C\" <= $3::text)) \
                 ORDER BY id",
                &[&attribute, &low, &high],
            )
            .await?;
        let mut ids = Vec::new();
        for row in &rows {
            let id: String = rows::col(row, 0)?;
            let value: String = rows::col(row, 1)?;
            if crate::store::codec::date_in(&id, &value, from, to)? {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    async fn methods(&self, user_id: &str) -> Result<Vec<RegisteredMethod>, StoreError> {
        let user_id = text(user_id);
        let sql = format!(
            "SELECT {} FROM methods WHERE user_id = $1 ORDER BY created, id",
            rows::METHOD_COLUMNS
        );
        let mut methods = self.query_all(&sql, &[&user_id], rows::method).await?;
        for method in &mut methods {
            seal::open_method(self.sealer(), method)?;
        }
        Ok(methods)
    }

    async fn add_method(
        &self,
        method: &RegisteredMethod,
        audit: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let (id, user_id) = (text(&method.id), text(&method.user_id));
        let data = seal::seal_method_data(
            self.sealer(),
            method.kind,
            &method.user_id,
            &method.id,
            &method.data,
        );
        let (display_name, data) = (text(&method.display_name), text(&data));
        let created = to_db_time(method.created);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx_execute(
            &tx,
            "INSERT INTO methods (id, user_id, kind, display_name, created, data) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &id,
                &user_id,
                &method.kind.as_str(),
                &display_name,
                &created,
                &data,
            ],
        )
        .await?;
        tx_audit(&tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn update_method_data(&self, method_id: &str, data: &str) -> Result<bool, StoreError> {
        let Some((user_id, kind, stored)) = self.method_owner(method_id).await? else {
            return Ok(false);
        };
        let data = seal::seal_method_data(self.sealer(), kind, &user_id, method_id, data);
        let (method_id, data) = (text(method_id), text(&data));
        // Conditional on the row still holding what was read (and so still being this user's).
        let updated = self
            .execute(
                "UPDATE methods SET data = $1 WHERE id = $2 AND data = $3",
                &[&data, &method_id, &stored],
            )
            .await?;
        Ok(updated == 1)
    }

    /// Records `audit` only when a method was deleted; the caller records a refusal itself.
    async fn delete_method(
        &self,
        user_id: &str,
        method_id: &str,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let (user_id, method_id) = (text(user_id), text(method_id));
        self.conditional_with_audit(
            "DELETE FROM methods WHERE id = $1 AND user_id = $2 RETURNING 1",
            &[&method_id, &user_id],
            audit,
        )
        .await
    }

    async fn method(&self, method_id: &str) -> Result<Option<RegisteredMethod>, StoreError> {
        let method_id = text(method_id);
        let sql = format!("SELECT {} FROM methods WHERE id = $1", rows::METHOD_COLUMNS);
        let mut method = self
            .query_all(&sql, &[&method_id], rows::method)
            .await?
            .pop();
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
        // A sealed value differs on every write (random nonce): compare what the row opens to,
        // then write only if the row still holds the very value read, so of concurrent
        // swappers exactly one wins, on any node.
        let Some((user_id, kind, stored)) = self.method_owner(method_id).await? else {
            return Ok(false);
        };
        let current = seal::open_method_data(self.sealer(), &user_id, method_id, &stored)?;
        if current != expected {
            return Ok(false);
        }
        let data = seal::seal_method_data(self.sealer(), kind, &user_id, method_id, data);
        let (method_id, data) = (text(method_id), text(&data));
        let updated = self
            .execute(
                "UPDATE methods SET data = $1 WHERE id = $2 AND data = $3",
                &[&data, &method_id, &stored],
            )
            .await?;
        Ok(updated == 1)
    }

    async fn create_web_session(
        &self,
        session: &WebSession,
        audit: Option<&NewAuditEvent>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        // Ceremonies of the expired sessions go with them (ON DELETE CASCADE).
        tx_execute(
            &tx,
            "DELETE FROM web_sessions WHERE expires <= $1",
            &[&to_db_time(now)],
        )
        .await?;
        let columns = WebSessionColumns::of(session);
        tx_execute(
            &tx,
            "INSERT INTO web_sessions (id_hash, user_id, created, expires, auth_method, \
             tap_id, tap_expires, registration_deadline, interrupt_mode, csrf_token) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &columns.params(),
        )
        .await?;
        if let Some(event) = audit {
            tx_audit(&tx, std::slice::from_ref(event)).await?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn web_session(&self, id_hash: &str) -> Result<Option<WebSession>, StoreError> {
        let id_hash = text(id_hash);
        let sql = format!(
            "SELECT {} FROM web_sessions WHERE id_hash = $1",
            rows::WEB_SESSION_COLUMNS
        );
        Ok(self
            .query_all(&sql, &[&id_hash], rows::web_session)
            .await?
            .pop())
    }

    async fn update_web_session(&self, session: &WebSession) -> Result<bool, StoreError> {
        let columns = WebSessionColumns::of(session);
        let updated = self
            .execute(
                "UPDATE web_sessions SET user_id = $2, created = $3, expires = $4, \
                 auth_method = $5, tap_id = $6, tap_expires = $7, \
                 registration_deadline = $8, interrupt_mode = $9, csrf_token = $10 \
                 WHERE id_hash = $1",
                &columns.params(),
            )
            .await?;
        Ok(updated == 1)
    }

    async fn delete_web_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let id_hash = text(id_hash);
        let deleted = self
            .execute("DELETE FROM web_sessions WHERE id_hash = $1", &[&id_hash])
            .await?;
        Ok(deleted == 1)
    }

    async fn put_web_ceremony(
        &self,
        ceremony: &WebCeremony,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx_execute(
            &tx,
            "DELETE FROM web_ceremonies WHERE expires <= $1",
            &[&to_db_time(now)],
        )
        .await?;
        let state = seal::seal_ceremony_state(self.sealer(), ceremony);
        let (id, state) = (text(&ceremony.id), text(&state));
        let session = ceremony.session_id_hash.as_deref().map(text);
        tx_execute(
            &tx,
            "INSERT INTO web_ceremonies (id, kind, session_id_hash, state, created, expires) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &id,
                &ceremony.kind.as_str(),
                &session,
                &state,
                &to_db_time(ceremony.created),
                &to_db_time(ceremony.expires),
            ],
        )
        .await?;
        tx.commit().await.map_err(map_err)
    }

    async fn take_web_ceremony(&self, id: &str) -> Result<Option<WebCeremony>, StoreError> {
        // One statement: of concurrent takers (on any node) exactly one gets the row.
        let id = text(id);
        let sql = format!(
            "DELETE FROM web_ceremonies WHERE id = $1 RETURNING {}",
            rows::WEB_CEREMONY_COLUMNS
        );
        let mut ceremony = self
            .query_all(&sql, &[&id], rows::web_ceremony)
            .await?
            .pop();
        if let Some(ceremony) = &mut ceremony {
            seal::open_ceremony(self.sealer(), ceremony)?;
        }
        Ok(ceremony)
    }

    async fn append_audit(&self, event: &NewAuditEvent) -> Result<(), StoreError> {
        self.append_audits(std::slice::from_ref(event)).await
    }

    async fn append_audits(&self, events: &[NewAuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx_audit(&tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn prune_audit(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let deleted = audit_chain::prune(&tx, before, limit, self.sealer()).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(deleted)
    }

    async fn audit_chain(&self) -> Result<crate::store::chain::ChainState, StoreError> {
        let rows = self.query(audit_chain::STATE_SQL, &[]).await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::corrupt("the audit chain head row is missing"))?;
        audit_chain::state(row)
    }

    async fn audit_chain_rows(
        &self,
        from_seq: i64,
        to_seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::store::chain::ChainRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM audit WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
            audit_chain::CHAIN_COLUMNS
        );
        self.query_all(
            &sql,
            &[&from_seq, &to_seq, &i64::from(limit)],
            audit_chain::chain_row,
        )
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
        let params: Vec<Param<'_>> = values.iter().map(|v| v.as_ref() as Param<'_>).collect();
        self.query_all(&sql, &params, rows::audit_event).await
    }
}
