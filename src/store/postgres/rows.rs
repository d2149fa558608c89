//! Conversions between domain types and PostgreSQL values: timestamps as `timestamptz` cut to
//! the microsecond exactly as the SQLite backend cuts them, enums as their stable strings, JSON
//! as text, and the one character PostgreSQL text can't hold (NUL).
//!
//! Anything the database holds that doesn't decode becomes [`StoreError::Corrupt`]; nothing here
//! touches a connection beyond reading the row it is given.

use crate::model::{CeremonyKind, WebAuthMethod, WebCeremony, WebSession};
use std::borrow::Cow;

use chrono::{DateTime, NaiveDate};
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::model::{
    AuditEvent, Channel, Group, GroupRef, NewAuditEvent, RegisteredMethod, StoredTap, Timestamp,
    User,
};
use crate::store::StoreError;

/// PostgreSQL text can't hold U+0000; the store keeps U+FFFD in its place. Applied to every
/// string sent as a parameter, so a lookup with a NUL finds what a write with a NUL stored,
/// and input with a NUL is never a database error (a 503 for bad input).
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// [`text`] for an optional string.
pub(crate) fn opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(text)
}

/// A timestamp as stored: cut to the microsecond, rounding down (as `timestamp_micros` does
/// for SQLite), so both backends give back the same instant.
pub(crate) fn to_db_time(t: Timestamp) -> Timestamp {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// A bound for an audit filter, clamped into what `timestamptz` can hold (it starts in 4713
/// BC; chrono goes further back). Every stored time is inside that range, so the clamp
/// doesn't change which events match.
pub(crate) fn to_db_bound(t: Timestamp) -> Timestamp {
    let earliest = NaiveDate::from_ymd_opt(-4712, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc());
    match earliest {
        Some(earliest) if t < earliest => earliest,
        _ => to_db_time(t),
    }
}

pub(crate) use crate::store::codec::{from_json, parse_kind, parse_result, result_str, to_json};

/// One column, its decoding failure reported as corruption.
pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|e| StoreError::corrupt_from(format!("column {index}: {e}"), e))
}

fn minutes(row: &Row, index: usize) -> Result<u32, StoreError> {
    let value: i64 = col(row, index)?;
    u32::try_from(value).map_err(|_| StoreError::corrupt(format!("lifetime out of range: {value}")))
}

/// Columns a [`User`] is read from, in this order: an array of group ids at 7, the identity
/// conflict (JSON or NULL) at 8, the manager's DN and id at 9 and 10, the dates (a JSON
/// object or NULL) at 11.
pub(crate) const USER_COLUMNS: &str = "u.id, u.dn, u.username, u.upn, u.display_name, u.mail, \
     u.account_enabled, \
     ARRAY(SELECT ug.group_id FROM user_groups ug WHERE ug.user_id = u.id), u.identity_conflict, \
     u.manager_dn, u.manager_id, u.dates";

/// How many columns [`USER_COLUMNS`] has (columns selected after it start here).
pub(crate) const USER_COLUMN_COUNT: usize = 12;

/// Reads a user selected with [`USER_COLUMNS`].
pub(crate) fn user(row: &Row) -> Result<User, StoreError> {
    let mut group_ids: Vec<String> = col(row, 7)?;
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

/// Reads a user selected with [`USER_COLUMNS`] followed by the four claim columns and three
/// arrays of the same length: its groups' ids, DNs and display names.
pub(crate) fn user_with_group_refs(row: &Row) -> Result<(User, Vec<GroupRef>), StoreError> {
    let user = user(row)?;
    let groups_at = USER_COLUMN_COUNT + 4;
    let ids: Vec<String> = col(row, groups_at)?;
    let dns: Vec<String> = col(row, groups_at + 1)?;
    let names: Vec<String> = col(row, groups_at + 2)?;
    if ids.len() != dns.len() || ids.len() != names.len() {
        return Err(StoreError::corrupt(format!(
            "the group columns of user {} have different lengths",
            user.id
        )));
    }
    let groups = ids
        .into_iter()
        .zip(dns)
        .zip(names)
        .map(|((id, dn), display_name)| GroupRef {
            id,
            dn,
            display_name,
        })
        .collect();
    Ok((user, groups))
}

/// Columns a [`Group`] is read from, in this order, followed by an array of member ids.
pub(crate) const GROUP_COLUMNS: &str = "g.id, g.dn, g.display_name, \
     ARRAY(SELECT ug.user_id FROM user_groups ug WHERE ug.group_id = g.id)";

/// Reads a group selected with [`GROUP_COLUMNS`].
pub(crate) fn group(row: &Row) -> Result<Group, StoreError> {
    let mut member_user_ids: Vec<String> = col(row, 3)?;
    member_user_ids.sort();
    member_user_ids.dedup();
    Ok(Group {
        id: col(row, 0)?,
        dn: col(row, 1)?,
        display_name: col(row, 2)?,
        member_user_ids,
    })
}

/// Columns a [`StoredTap`] is read from, in this order.
pub(crate) const TAP_COLUMNS: &str =
    "id, user_id, code_hash, created, start, lifetime_in_minutes, is_usable_once, used_at, \
     code_length";

/// Reads a TAP selected with [`TAP_COLUMNS`].
pub(crate) fn tap(row: &Row) -> Result<StoredTap, StoreError> {
    Ok(StoredTap {
        id: col(row, 0)?,
        user_id: col(row, 1)?,
        code_hash: col(row, 2)?,
        created: col(row, 3)?,
        start: col(row, 4)?,
        lifetime_in_minutes: minutes(row, 5)?,
        is_usable_once: col(row, 6)?,
        used_at: col(row, 7)?,
        code_length: match col::<Option<i32>>(row, 8)? {
            Some(n) => {
                Some(u32::try_from(n).map_err(|_| {
                    StoreError::corrupt(format!("taps.code_length is negative: {n}"))
                })?)
            }
            None => None,
        },
    })
}

/// Columns a [`RegisteredMethod`] is read from, in this order.
pub(crate) const METHOD_COLUMNS: &str = "id, user_id, kind, display_name, created, data";

/// Reads a method selected with [`METHOD_COLUMNS`].
pub(crate) fn method(row: &Row) -> Result<RegisteredMethod, StoreError> {
    let kind: String = col(row, 2)?;
    Ok(RegisteredMethod {
        id: col(row, 0)?,
        user_id: col(row, 1)?,
        kind: parse_kind(&kind)?,
        display_name: col(row, 3)?,
        created: col(row, 4)?,
        data: col(row, 5)?,
    })
}

/// Columns an [`AuditEvent`] is read from, in this order.
pub(crate) const AUDIT_COLUMNS: &str = "id, time, actor, activity, target, result, reason_code, \
     channel, source_address, details";

/// Reads an audit event selected with [`AUDIT_COLUMNS`].
pub(crate) fn audit_event(row: &Row) -> Result<AuditEvent, StoreError> {
    let result: String = col(row, 5)?;
    let channel: String = col(row, 7)?;
    let details: String = col(row, 9)?;
    Ok(AuditEvent {
        id: col(row, 0)?,
        event: NewAuditEvent {
            time: col(row, 1)?,
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

/// A web session's values in the column order both `INSERT` and `UPDATE` bind them:
/// `id_hash, user_id, created, expires, auth_method, tap_id, tap_expires,
/// registration_deadline, interrupt_mode, csrf_token`.
pub(crate) struct WebSessionColumns<'a> {
    id_hash: Cow<'a, str>,
    user_id: Cow<'a, str>,
    created: Timestamp,
    expires: Timestamp,
    auth_method: &'static str,
    tap_id: Option<Cow<'a, str>>,
    tap_expires: Option<Timestamp>,
    registration_deadline: Option<Timestamp>,
    interrupt_mode: bool,
    csrf_token: Cow<'a, str>,
}

impl<'a> WebSessionColumns<'a> {
    pub(crate) fn of(session: &'a WebSession) -> Self {
        WebSessionColumns {
            id_hash: text(&session.id_hash),
            user_id: text(&session.user_id),
            created: to_db_time(session.created),
            expires: to_db_time(session.expires),
            auth_method: session.auth_method.as_str(),
            tap_id: opt_text(&session.tap_id),
            tap_expires: session.tap_expires.map(to_db_time),
            registration_deadline: session.registration_deadline.map(to_db_time),
            interrupt_mode: session.interrupt_mode,
            csrf_token: text(&session.csrf_token),
        }
    }

    /// The values as `$1`…`$10`.
    pub(crate) fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 10] {
        [
            &self.id_hash,
            &self.user_id,
            &self.created,
            &self.expires,
            &self.auth_method,
            &self.tap_id,
            &self.tap_expires,
            &self.registration_deadline,
            &self.interrupt_mode,
            &self.csrf_token,
        ]
    }
}

/// Columns a [`WebSession`] is read from, in this order.
pub(crate) const WEB_SESSION_COLUMNS: &str = "id_hash, user_id, created, expires, auth_method, \
     tap_id, tap_expires, registration_deadline, interrupt_mode, csrf_token";

/// Reads a session selected with [`WEB_SESSION_COLUMNS`].
pub(crate) fn web_session(row: &Row) -> Result<WebSession, StoreError> {
    let method: String = col(row, 4)?;
    Ok(WebSession {
        id_hash: col(row, 0)?,
        user_id: col(row, 1)?,
        created: col(row, 2)?,
        expires: col(row, 3)?,
        auth_method: WebAuthMethod::parse(&method)
            .ok_or_else(|| StoreError::corrupt(format!("unknown web auth method {method:?}")))?,
        tap_id: col(row, 5)?,
        tap_expires: col(row, 6)?,
        registration_deadline: col(row, 7)?,
        interrupt_mode: col(row, 8)?,
        csrf_token: col(row, 9)?,
    })
}

/// Columns a [`WebCeremony`] is read from, in this order.
pub(crate) const WEB_CEREMONY_COLUMNS: &str = "id, kind, session_id_hash, state, created, expires";

/// Reads a ceremony selected with [`WEB_CEREMONY_COLUMNS`].
pub(crate) fn web_ceremony(row: &Row) -> Result<WebCeremony, StoreError> {
    let kind: String = col(row, 1)?;
    Ok(WebCeremony {
        id: col(row, 0)?,
        kind: CeremonyKind::parse(&kind)
            .ok_or_else(|| StoreError::corrupt(format!("unknown ceremony kind {kind:?}")))?,
        session_id_hash: col(row, 2)?,
        state: col(row, 3)?,
        created: col(row, 4)?,
        expires: col(row, 5)?,
    })
}
