//! Column encodings both store backends share: how an audit result, a method kind and a JSON
//! column are spelled in the database, and the `Corrupt` errors for values tapd can't read.
//!
//! May depend on: `model`.

use super::StoreError;
use crate::model::{AuditResult, MethodKind};

/// How an [`AuditResult`] is spelled in the `audit.result` column.
pub(crate) fn result_str(result: AuditResult) -> &'static str {
    match result {
        AuditResult::Success => "success",
        AuditResult::Failure => "failure",
    }
}

/// Reads what [`result_str`] wrote.
pub(crate) fn parse_result(s: &str) -> Result<AuditResult, StoreError> {
    match s {
        "success" => Ok(AuditResult::Success),
        "failure" => Ok(AuditResult::Failure),
        other => Err(StoreError::corrupt(format!(
            "unknown audit result {other:?}"
        ))),
    }
}

/// Reads a method kind written with [`MethodKind::as_str`].
pub(crate) fn parse_kind(s: &str) -> Result<MethodKind, StoreError> {
    [MethodKind::Fido2, MethodKind::SoftwareOath]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| StoreError::corrupt(format!("unknown method kind {s:?}")))
}

/// Serializes a value for a JSON text column. JSON escapes NUL as `\u0000`, so the text never
/// holds one (PostgreSQL text can't).
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::corrupt_from(format!("encoding JSON: {e}"), e))
}

/// Parses a JSON text column; `what` names it in the error.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::corrupt_from(format!("{what}: {e}"), e))
}

/// A user's dates for the `users.dates` column: a JSON object, or NULL when there are none.
pub(crate) fn dates_json(
    dates: &std::collections::BTreeMap<String, chrono::NaiveDate>,
) -> Result<Option<String>, StoreError> {
    if dates.is_empty() {
        Ok(None)
    } else {
        to_json(dates).map(Some)
    }
}

/// The bounds of a date window as the `users.dates` column spells dates ("YYYY-MM-DD"), for a
/// backend to narrow its rows by string comparison; `None` when a bound's year is outside
/// 0..=9999. Within those years the text sorts as the dates do; outside them serde writes
/// "+10000-01-01" or "-0001-01-01", which don't. A date outside those years can't lie between
/// two bounds inside them, so the narrowing loses no match; [`date_in`] then decides exactly.
pub(crate) fn sortable_window(
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Option<(String, String)> {
    let four_digits = |d: chrono::NaiveDate| (0..=9999).contains(&chrono::Datelike::year(&d));
    (four_digits(from) && four_digits(to)).then(|| {
        (
            from.format("%Y-%m-%d").to_string(),
            to.format("%Y-%m-%d").to_string(),
        )
    })
}

/// Whether a date read from the `users.dates` column (the text of one JSON string value, as
/// serde wrote it) lies in `from..=to`; a value that is no date is corrupt data, named.
pub(crate) fn date_in(
    user_id: &str,
    value: &str,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Result<bool, StoreError> {
    let date: chrono::NaiveDate =
        serde_json::from_value(serde_json::Value::String(value.to_owned())).map_err(|e| {
            StoreError::corrupt_from(format!("user {user_id}: date {value:?}: {e}"), e)
        })?;
    Ok(from <= date && date <= to)
}

/// The `last_error` an unreadable outbox message is listed with: the one stored, if it already
/// names the damage (its failure did), else that one and the damage (`error`).
pub(crate) fn unreadable_error(stored: Option<String>, error: &StoreError) -> String {
    use super::UNREADABLE;
    match stored {
        Some(stored) if stored.contains(UNREADABLE) => stored,
        Some(stored) if !stored.is_empty() => format!("{stored}; {UNREADABLE}: {error}"),
        _ => format!("{UNREADABLE}: {error}"),
    }
}
