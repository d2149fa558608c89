//! SQLite's half of [`crate::store::identity`]: the claim columns, the name lookup and the
//! conflict check a sync runs inside its transaction.
//!
//! May depend on: `model`, `store`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::{Connection, OptionalExtension, Row};

use super::{map_err, query_all, rows};
use crate::model::{name_key, IdentityConflict, NewAuditEvent, User};
use crate::store::identity::{self, Claims};
use crate::store::StoreError;

/// The claim columns read after [`rows::USER_COLUMNS`] (from [`rows::USER_COLUMN_COUNT`] on).
const CLAIM_COLUMNS: &str = "u.username_key, u.upn_key, u.username_since, u.upn_since";

/// Above this many names to check, one aggregate over the table finds the contested ones
/// (a first sync of 100,000 users) rather than a lookup per name.
const BULK_CHECK: usize = 4096;

fn claims(row: &Row<'_>, user: &User) -> Result<Claims, StoreError> {
    let at = rows::USER_COLUMN_COUNT;
    let get = |i: usize| -> Result<Option<String>, StoreError> { row.get(i).map_err(map_err) };
    Ok(Claims {
        id: user.id.clone(),
        dn: user.dn.clone(),
        username: user.username.clone(),
        username_key: get(at)?.unwrap_or_else(|| name_key(&user.username)),
        upn_key: get(at + 1)?.unwrap_or_else(|| name_key(&user.user_principal_name)),
        username_since: row.get(at + 2).map_err(map_err)?,
        upn_since: row.get(at + 3).map_err(map_err)?,
    })
}

fn user_and_claims(row: &Row<'_>) -> Result<(User, Claims), StoreError> {
    let user = rows::user(row)?;
    let claims = claims(row, &user)?;
    Ok((user, claims))
}

/// The one user `key` names (a stable id, a username or a userPrincipalName), or none: see
/// [`identity::choose`].
pub(super) fn user_by_key(conn: &Connection, key: &str) -> Result<Option<User>, StoreError> {
    let sql = format!(
        "SELECT {}, {CLAIM_COLUMNS} FROM users u \
         WHERE u.id = ?1 OR u.username_key = ?2 OR u.upn_key = ?2",
        rows::USER_COLUMNS
    );
    let candidates = query_all(conn, &sql, [key, &name_key(key)], user_and_claims)?;
    Ok(identity::choose(key, candidates))
}

/// Every user that claims `name`.
fn claimants(conn: &Connection, name: &str) -> Result<Vec<Claims>, StoreError> {
    let sql = format!(
        "SELECT {}, {CLAIM_COLUMNS} FROM users u WHERE u.username_key = ?1 OR u.upn_key = ?1",
        rows::USER_COLUMNS
    );
    Ok(query_all(conn, &sql, [name], user_and_claims)?
        .into_iter()
        .map(|(_, claims)| claims)
        .collect())
}

/// Fills in the keys of rows written before they existed (schema version 4 can't compute
/// them in SQL). Runs once after the migration; a no-op afterwards.
pub(super) fn backfill_keys(conn: &Connection) -> Result<(), StoreError> {
    let pending: Vec<(String, String, String)> = {
        let mut stmt = conn
            .prepare(
                "SELECT id, username, upn FROM users WHERE username_key IS NULL OR upn_key IS NULL",
            )
            .map_err(map_err)?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .map_err(map_err)?;
        rows.collect::<Result<_, _>>().map_err(map_err)?
    };
    if pending.is_empty() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction().map_err(map_err)?;
    {
        let mut update = tx
            .prepare("UPDATE users SET username_key = ?2, upn_key = ?3 WHERE id = ?1")
            .map_err(map_err)?;
        for (id, username, upn) in &pending {
            update
                .execute([id, &name_key(username), &name_key(upn)])
                .map_err(map_err)?;
        }
    }
    tx.commit().map_err(map_err)?;
    log::info!(
        "store: sign-in name keys written for {} users",
        pending.len()
    );
    Ok(())
}

/// The claim epoch of this sync's writes: one more than the last sync's (bumped by
/// [`check_conflicts`] at the end of the transaction, so every write of one sync shares it).
pub(super) fn write_epoch(conn: &Connection) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT epoch + 1 FROM identity_state WHERE id = 1")
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(map_err)
}

/// After a sync's writes, inside its transaction: finds the conflicts among the names the sync
/// wrote (`written`) and the names of users quarantined before it, stores each user's new
/// state, bumps the claim epoch, and returns the audit events of what changed (stamped like
/// `template`).
pub(super) fn check_conflicts(
    conn: &Connection,
    written: &BTreeSet<String>,
    template: &NewAuditEvent,
) -> Result<Vec<NewAuditEvent>, StoreError> {
    let checked: i64 = conn
        .prepare_cached("SELECT checked FROM identity_state WHERE id = 1")
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(map_err)?;
    let before: Vec<(String, String, String, String)> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, identity_conflict, coalesce(username_key, ''), \
                 coalesce(upn_key, '') FROM users WHERE identity_conflict IS NOT NULL",
            )
            .map_err(map_err)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .map_err(map_err)?;
        rows.collect::<Result<_, _>>().map_err(map_err)?
    };
    let names = identity::names_to_check(
        written.iter().map(String::as_str),
        before
            .iter()
            .flat_map(|(_, _, username, upn)| [username.as_str(), upn.as_str()]),
    );
    let contested: Vec<String> = if checked == 0 || names.len() > BULK_CHECK {
        let mut stmt = conn
            .prepare_cached(
                "SELECT name FROM (SELECT username_key AS name FROM users \
                 UNION ALL SELECT upn_key FROM users WHERE upn_key <> '' AND upn_key <> username_key) \
                 GROUP BY name HAVING count(*) > 1",
            )
            .map_err(map_err)?;
        let rows = stmt.query_map([], |row| row.get(0)).map_err(map_err)?;
        let all: Vec<String> = rows.collect::<Result<_, _>>().map_err(map_err)?;
        // Names of quarantined users are rechecked even when no longer contested (lifted).
        all.into_iter()
            .chain(
                before
                    .iter()
                    .flat_map(|(_, _, u, p)| [u.clone(), p.clone()]),
            )
            .filter(|n| !n.is_empty())
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect()
    } else {
        names.into_iter().collect()
    };
    let mut by_name: BTreeMap<String, Vec<Claims>> = BTreeMap::new();
    for name in contested {
        let found = claimants(conn, &name)?;
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
    let mut set = conn
        .prepare_cached("UPDATE users SET identity_conflict = ?2 WHERE id = ?1")
        .map_err(map_err)?;
    for (id, old, new) in identity::changes(&previous, &after) {
        let body = new.as_ref().map(rows::to_json).transpose()?;
        set.execute(rusqlite::params![id, body]).map_err(map_err)?;
        let found = conn
            .prepare_cached("SELECT upn, dn FROM users WHERE id = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([&id], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(map_err)?;
        events.push(identity::conflict_event(template, &id, found, old, new));
    }
    conn.prepare_cached("UPDATE identity_state SET epoch = epoch + 1, checked = 1 WHERE id = 1")
        .and_then(|mut stmt| stmt.execute([]))
        .map_err(map_err)?;
    Ok(events)
}

/// Users quarantined by a conflict, by username.
pub(super) fn quarantined(conn: &Connection) -> Result<Vec<User>, StoreError> {
    let sql = format!(
        "SELECT {} FROM users u WHERE u.identity_conflict IS NOT NULL \
         ORDER BY lower(u.username), u.username, u.id",
        rows::USER_COLUMNS
    );
    query_all(conn, &sql, [], rows::user)
}
