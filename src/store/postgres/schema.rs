//! The embedded PostgreSQL schema: migrations compiled into the binary, applied in order and
//! recorded in `schema_migrations`.
//!
//! Several nodes may start at once against one database, so a migration run holds a
//! transaction-scoped advisory lock ([`MIGRATION_LOCK`]): the first node migrates, the others
//! wait, then find the work done. The whole run is one transaction (PostgreSQL's DDL is
//! transactional), so a node killed half-way leaves the schema as it was. A database whose
//! newest recorded migration is beyond what this binary knows is refused with
//! [`StoreError::SchemaTooNew`], and one whose records don't name tapd's migrations is refused
//! as not a tapd database.
//!
//! Depends only on tokio-postgres and the store's error type, and on the audit chain for the
//! migration that adds it (the events already stored are linked in the same transaction).

use deadpool_postgres::ClientWrapper as Client;

use super::map_err;
use crate::store::StoreError;

/// Migration `n` (1-based) brings the schema from version `n - 1` to `n`: its name and SQL.
/// Append only: a released migration is never edited.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_initial", include_str!("migrations/0001_initial.sql")),
    (
        "0002_web_sessions",
        include_str!("migrations/0002_web_sessions.sql"),
    ),
    (
        "0003_sync_lease_epoch",
        include_str!("migrations/0003_sync_lease_epoch.sql"),
    ),
    (
        "0004_identity_claims",
        include_str!("migrations/0004_identity_claims.sql"),
    ),
    (
        "0005_audit_chain",
        include_str!("migrations/0005_audit_chain.sql"),
    ),
    ("0006_outbox", include_str!("migrations/0006_outbox.sql")),
    (
        "0007_tap_code_length",
        include_str!("migrations/0007_tap_code_length.sql"),
    ),
    (
        "0008_user_manager",
        include_str!("migrations/0008_user_manager.sql"),
    ),
    (
        "0009_onboarding_failures",
        include_str!("migrations/0009_onboarding_failures.sql"),
    ),
];

/// The version whose migration adds the audit chain: the events already stored are linked
/// right after its script, in the same transaction.
const AUDIT_CHAIN_VERSION: i64 = 5;

/// The schema version this binary writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Key of the advisory lock that serialises migrations across nodes ("tapdmigr" in ASCII).
pub(crate) const MIGRATION_LOCK: i64 = 0x7461_7064_6d69_6772;

/// Brings the schema up to [`SCHEMA_VERSION`], or refuses a newer or foreign one.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(map_err)?;
    // DDL on a large table may legitimately run longer than the service's statement timeout,
    // and another node may hold the lock while it migrates: wait for it, but not forever.
    tx.batch_execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '5min'")
        .await
        .map_err(map_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(map_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(map_err)?;
    let applied = tx
        .query(
            "SELECT version, name FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(map_err)?;
    let mut found = 0_i64;
    for row in &applied {
        let version: i64 = row
            .try_get(0)
            .map_err(|e| StoreError::corrupt_from(format!("schema_migrations.version: {e}"), e))?;
        let name: String = row
            .try_get(1)
            .map_err(|e| StoreError::corrupt_from(format!("schema_migrations.name: {e}"), e))?;
        if let Some((expected, _)) = usize::try_from(version - 1)
            .ok()
            .and_then(|i| MIGRATIONS.get(i))
        {
            if *expected != name {
                return Err(StoreError::corrupt(format!(
                    "not a tapd database: schema_migrations names migration {version} {name:?}, \
                     tapd's is {expected:?}"
                )));
            }
        }
        found = found.max(version);
    }
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 0 || usize::try_from(found).ok() != Some(applied.len()) {
        return Err(StoreError::corrupt(format!(
            "schema_migrations is inconsistent: {} rows up to version {found}",
            applied.len()
        )));
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version <= found {
            continue;
        }
        tx.batch_execute(sql).await.map_err(map_err)?;
        if version == AUDIT_CHAIN_VERSION {
            super::audit_chain::link_existing(&tx).await?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, name],
        )
        .await
        .map_err(map_err)?;
        log::info!("PostgreSQL store: applied schema migration {version} ({name})");
    }
    tx.commit().await.map_err(map_err)
}
