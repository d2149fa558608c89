//! PostgreSQL's half of [`crate::store::identity`]: the claim columns, the name lookup and the
//! conflict check a sync runs inside its transaction (the same rules as SQLite's).
//!
//! May depend on: `model`, `store`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use deadpool_postgres::Transaction;
use tokio_postgres::{GenericClient, Row};

use super::{map_err, rows};
use crate::model::{name_key, IdentityConflict, NewAuditEvent, User};
use crate::store::identity::{self, Claims};
use crate::store::StoreError;

/// The claim columns read after [`rows::USER_COLUMNS`] (from [`rows::USER_COLUMN_COUNT`] on).
pub(super) const CLAIM_COLUMNS: &str = "u.username_key, u.upn_key, u.username_since, u.upn_since";

/// The WHERE clause of a name lookup: `$1` the key as typed, `$2` its folded form.
pub(super) const LOOKUP: &str = "u.id = $1 OR u.username_key = $2 OR u.upn_key = $2";

/// Above this many names to check, one aggregate over the table finds the contested ones.
const BULK_CHECK: usize = 4096;

/// Reads the claim columns of a row whose user is `user`.
pub(super) fn claims(row: &Row, user: &User) -> Result<Claims, StoreError> {
    let at = rows::USER_COLUMN_COUNT;
    let username_key: Option<String> = rows::col(row, at)?;
    let upn_key: Option<String> = rows::col(row, at + 1)?;
    Ok(Claims {
        id: user.id.clone(),
        dn: user.dn.clone(),
        username: user.username.clone(),
        username_key: username_key.unwrap_or_else(|| name_key(&user.username)),
        upn_key: upn_key.unwrap_or_else(|| name_key(&user.user_principal_name)),
        username_since: rows::col(row, at + 2)?,
        upn_since: rows::col(row, at + 3)?,
    })
}

/// A user row with its claims.
pub(super) fn user_and_claims(row: &Row) -> Result<(User, Claims), StoreError> {
    let user = rows::user(row)?;
    let claims = claims(row, &user)?;
    Ok((user, claims))
}

/// Fills in the keys of rows written before they existed. Runs at every connect; a no-op once
/// done.
pub(super) async fn backfill_keys(client: &impl GenericClient) -> Result<(), StoreError> {
    let pending = client
        .query(
            "SELECT id, username, upn FROM users WHERE username_key IS NULL OR upn_key IS NULL",
            &[],
        )
        .await
        .map_err(map_err)?;
    if pending.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(pending.len());
    let mut usernames = Vec::with_capacity(pending.len());
    let mut upns = Vec::with_capacity(pending.len());
    for row in &pending {
        let id: String = rows::col(row, 0)?;
        let username: String = rows::col(row, 1)?;
        let upn: String = rows::col(row, 2)?;
        ids.push(id);
        usernames.push(name_key(&username));
        upns.push(name_key(&upn));
    }
    client
        .execute(
            "UPDATE users SET username_key = k.u, upn_key = k.p \
             FROM unnest($1::text[], $2::text[], $3::text[]) AS k(id, u, p) \
             WHERE users.id = k.id",
            &[&ids, &usernames, &upns],
        )
        .await
        .map_err(map_err)?;
    log::info!("store: sign-in name keys written for {} users", ids.len());
    Ok(())
}

/// The claim epoch of this sync's writes; locks the state row until the transaction ends, so
/// two nodes' applies can't share an epoch.
pub(super) async fn write_epoch(tx: &Transaction<'_>) -> Result<i64, StoreError> {
    let row = tx
        .query_one(
            "SELECT epoch + 1 FROM identity_state WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(map_err)?;
    rows::col(&row, 0)
}

async fn claimants(tx: &Transaction<'_>, name: &str) -> Result<Vec<Claims>, StoreError> {
    let sql = format!(
        "SELECT {}, {CLAIM_COLUMNS} FROM users u WHERE u.username_key = $1 OR u.upn_key = $1",
        rows::USER_COLUMNS
    );
    let statement = tx.prepare_cached(&sql).await.map_err(map_err)?;
    tx.query(&statement, &[&name])
        .await
        .map_err(map_err)?
        .iter()
        .map(|row| user_and_claims(row).map(|(_, claims)| claims))
        .collect()
}

/// As SQLite's: after a sync's writes, inside its transaction, finds the conflicts among the
/// names written and those of users quarantined before, stores each change, bumps the claim
/// epoch and returns the audit events.
pub(super) async fn check_conflicts(
    tx: &Transaction<'_>,
    written: &BTreeSet<String>,
    template: &NewAuditEvent,
) -> Result<Vec<NewAuditEvent>, StoreError> {
    let checked: bool = rows::col(
        &tx.query_one("SELECT checked FROM identity_state WHERE id = 1", &[])
            .await
            .map_err(map_err)?,
        0,
    )?;
    let mut before: Vec<(String, String, String, String)> = Vec::new();
    for row in tx
        .query(
            "SELECT id, identity_conflict, coalesce(username_key, ''), coalesce(upn_key, '') \
             FROM users WHERE identity_conflict IS NOT NULL",
            &[],
        )
        .await
        .map_err(map_err)?
    {
        before.push((
            rows::col(&row, 0)?,
            rows::col(&row, 1)?,
            rows::col(&row, 2)?,
            rows::col(&row, 3)?,
        ));
    }
    let quarantined_names = || {
        before
            .iter()
            .flat_map(|(_, _, username, upn)| [username.as_str(), upn.as_str()])
    };
    let names = identity::names_to_check(written.iter().map(String::as_str), quarantined_names());
    let to_check: BTreeSet<String> = if !checked || names.len() > BULK_CHECK {
        let mut all = BTreeSet::new();
        for row in tx
            .query(
                "SELECT name FROM (SELECT username_key AS name FROM users \
                 UNION ALL SELECT upn_key FROM users \
                 WHERE upn_key <> '' AND upn_key <> username_key) n \
                 GROUP BY name HAVING count(*) > 1",
                &[],
            )
            .await
            .map_err(map_err)?
        {
            all.insert(rows::col::<String>(&row, 0)?);
        }
        identity::names_to_check(all.iter().map(String::as_str), quarantined_names())
    } else {
        names
    };
    let mut by_name: BTreeMap<String, Vec<Claims>> = BTreeMap::new();
    for name in to_check {
        let found = claimants(tx, &name).await?;
        by_name.insert(name, found);
    }
    let after = identity::conflicts(&by_name);
    let mut previous: HashMap<String, Option<IdentityConflict>> = HashMap::new();
    for (id, body, _, _) in &before {
        previous.insert(
            id.clone(),
            Some(rows::from_json("identity conflict", body)?),
        );
    }
    let mut events = Vec::new();
    for (id, old, new) in identity::changes(&previous, &after) {
        let body = new.as_ref().map(rows::to_json).transpose()?;
        let found = tx
            .query_opt(
                "UPDATE users SET identity_conflict = $2 WHERE id = $1 RETURNING upn, dn",
                &[&id, &body],
            )
            .await
            .map_err(map_err)?
            .map(|row| Ok::<_, StoreError>((rows::col(&row, 0)?, rows::col(&row, 1)?)))
            .transpose()?;
        events.push(identity::conflict_event(template, &id, found, old, new));
    }
    tx.execute(
        "UPDATE identity_state SET epoch = epoch + 1, checked = true WHERE id = 1",
        &[],
    )
    .await
    .map_err(map_err)?;
    Ok(events)
}
