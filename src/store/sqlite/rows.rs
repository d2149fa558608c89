//! Conversions between domain types and SQLite column values: timestamps as integer
//! microseconds, enums as their stable strings, JSON columns through serde.
//!
//! Anything the database holds that doesn't decode becomes [`StoreError::Corrupt`]; nothing here
//! touches a connection beyond reading the row it is given.

use chrono::DateTime;
use rusqlite::Row;

use crate::model::{
    AuditEvent, CeremonyKind, Channel, Group, GroupRef, NewAuditEvent, RegisteredMethod, StoredTap,
    Timestamp, User, WebAuthMethod, WebCeremony, WebSession,
};
use crate::store::StoreError;

/// A timestamp as stored: microseconds since the Unix epoch. Total over chrono's range and
/// ordered like the instants; sub-microsecond digits are dropped (as PostgreSQL does).
pub(crate) fn to_micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

/// The inverse of [`to_micros`].
pub(crate) fn from_micros(micros: i64) -> Result<Timestamp, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::corrupt(format!("timestamp out of range: {micros}")))
}

fn opt_from_micros(micros: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    micros.map(from_micros).transpose()
}

pub(crate) use crate::store::codec::{from_json, parse_kind, parse_result, result_str, to_json};

/// Decodes a `rusqlite` column failure as corruption.
fn col<T: rusqlite::types::FromSql>(row: &Row<'_>, index: usize) -> Result<T, StoreError> {
    row.get(index).map_err(super::map_err)
}

/// Columns a [`User`] is read from, in this order: a JSON array of group ids at 7, the
/// identity conflict (JSON or NULL) at 8, the manager's DN and id at 9 and 10, the dates
/// (a JSON object or NULL) at 11.
pub(crate) const USER_COLUMNS: &str = "u.id, u.dn, u.username, u.upn, u.display_name, u.mail, \
     u.account_enabled, u.group_ids, u.identity_conflict, u.manager_dn, u.manager_id, u.dates";

/// How many columns [`USER_COLUMNS`] has (columns selected after it start here).
pub(crate) const USER_COLUMN_COUNT: usize = 12;

/// Reads a user selected with [`USER_COLUMNS`].
pub(crate) fn user(row: &Row<'_>) -> Result<User, StoreError> {
    let groups: String = col(row, 7)?;
    let mut group_ids: Vec<String> = from_json("user group ids", &groups)?;
    group_ids.sort();
    group_ids.dedup();
    let conflict: Option<String> = col(row, 8)?;
    let identity_conflict = conflict
        .map(|body| from_json("identity conflict", &body))
        .transpose()?;
    let dates: Option<String> = col(row, 11)?;
    let dates = dates
        .map(|body| from_json("user dates", &body))
        .transpose()?
        .unwrap_or_default();
    Ok(User {
        id: col(row, 0)?,
        dn: col(row, 1)?,
        username: col(row, 2)?,
        user_principal_name: col(row, 3)?,
        display_name: col(row, 4)?,
        mail: col(row, 5)?,
        account_enabled: col(row, 6)?,
        group_ids,
        identity_conflict,
        manager_dn: col(row, 9)?,
        manager_id: col(row, 10)?,
        dates,
    })
}

/// Columns a [`Group`] is read from, in this order, followed by a JSON array of member ids.
pub(crate) const GROUP_COLUMNS: &str = "g.id, g.dn, g.display_name, \
     (SELECT json_group_array(gm.user_id) FROM group_members gm WHERE gm.group_id = g.id)";

/// Reads a group selected with [`GROUP_COLUMNS`].
pub(crate) fn group(row: &Row<'_>) -> Result<Group, StoreError> {
    let members: String = col(row, 3)?;
    let mut member_user_ids: Vec<String> = from_json("group member ids", &members)?;
    member_user_ids.sort();
    member_user_ids.dedup();
    Ok(Group {
        id: col(row, 0)?,
        dn: col(row, 1)?,
        display_name: col(row, 2)?,
        member_user_ids,
    })
}

/// Reads `id, dn, display_name` of a group.
pub(crate) fn group_ref(row: &Row<'_>) -> Result<GroupRef, StoreError> {
    Ok(GroupRef {
        id: col(row, 0)?,
        dn: col(row, 1)?,
        display_name: col(row, 2)?,
    })
}

/// Columns a [`StoredTap`] is read from, in this order.
pub(crate) const TAP_COLUMNS: &str =
    "id, user_id, code_hash, created, start, lifetime_in_minutes, is_usable_once, used_at, \
     code_length";

/// Reads a TAP selected with [`TAP_COLUMNS`].
pub(crate) fn tap(row: &Row<'_>) -> Result<StoredTap, StoreError> {
    Ok(StoredTap {
        id: col(row, 0)?,
        user_id: col(row, 1)?,
        code_hash: col(row, 2)?,
        created: from_micros(col(row, 3)?)?,
        start: from_micros(col(row, 4)?)?,
        lifetime_in_minutes: col(row, 5)?,
        is_usable_once: col(row, 6)?,
        used_at: opt_from_micros(col(row, 7)?)?,
        code_length: col(row, 8)?,
    })
}

/// Columns a [`RegisteredMethod`] is read from, in this order.
pub(crate) const METHOD_COLUMNS: &str = "id, user_id, kind, display_name, created, data";

/// Reads a method selected with [`METHOD_COLUMNS`].
pub(crate) fn method(row: &Row<'_>) -> Result<RegisteredMethod, StoreError> {
    let kind: String = col(row, 2)?;
    Ok(RegisteredMethod {
        id: col(row, 0)?,
        user_id: col(row, 1)?,
        kind: parse_kind(&kind)?,
        display_name: col(row, 3)?,
        created: from_micros(col(row, 4)?)?,
        data: col(row, 5)?,
    })
}

/// Columns an [`AuditEvent`] is read from, in this order.
pub(crate) const AUDIT_COLUMNS: &str = "id, time, actor, activity, target, result, reason_code, \
     channel, source_address, details";

/// Reads an audit event selected with [`AUDIT_COLUMNS`].
pub(crate) fn audit_event(row: &Row<'_>) -> Result<AuditEvent, StoreError> {
    let result: String = col(row, 5)?;
    let channel: String = col(row, 7)?;
    let details: String = col(row, 9)?;
    Ok(AuditEvent {
        id: col(row, 0)?,
        event: NewAuditEvent {
            time: from_micros(col(row, 1)?)?,
            actor: col(row, 2)?,
            activity: col(row, 3)?,
            target: col(row, 4)?,
            result: parse_result(&result)?,
            reason_code: col(row, 6)?,
            channel: Channel::parse(&channel)
                .ok_or_else(|| StoreError::corrupt(format!("unknown channel {channel:?}")))?,
            source_address: col(row, 8)?,
            details: from_json("audit details", &details)?,
        },
    })
}

/// Columns a [`WebSession`] is read from, in this order.
pub(crate) const WEB_SESSION_COLUMNS: &str = "id_hash, user_id, created, expires, auth_method, \
     tap_id, tap_expires, registration_deadline, interrupt_mode, csrf_token";

/// Reads a session selected with [`WEB_SESSION_COLUMNS`].
pub(crate) fn web_session(row: &Row<'_>) -> Result<WebSession, StoreError> {
    let method: String = col(row, 4)?;
    Ok(WebSession {
        id_hash: col(row, 0)?,
        user_id: col(row, 1)?,
        created: from_micros(col(row, 2)?)?,
        expires: from_micros(col(row, 3)?)?,
        auth_method: WebAuthMethod::parse(&method)
            .ok_or_else(|| StoreError::corrupt(format!("unknown web auth method {method:?}")))?,
        tap_id: col(row, 5)?,
        tap_expires: opt_from_micros(col(row, 6)?)?,
        registration_deadline: opt_from_micros(col(row, 7)?)?,
        interrupt_mode: col(row, 8)?,
        csrf_token: col(row, 9)?,
    })
}

/// Columns a [`WebCeremony`] is read from, in this order.
pub(crate) const WEB_CEREMONY_COLUMNS: &str = "id, kind, session_id_hash, state, created, expires";

/// Reads a ceremony selected with [`WEB_CEREMONY_COLUMNS`].
pub(crate) fn web_ceremony(row: &Row<'_>) -> Result<WebCeremony, StoreError> {
    let kind: String = col(row, 1)?;
    Ok(WebCeremony {
        id: col(row, 0)?,
        kind: CeremonyKind::parse(&kind)
            .ok_or_else(|| StoreError::corrupt(format!("unknown ceremony kind {kind:?}")))?,
        session_id_hash: col(row, 2)?,
        state: col(row, 3)?,
        created: from_micros(col(row, 4)?)?,
        expires: from_micros(col(row, 5)?)?,
    })
}
