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
