//! Writes audit events to the log (and so to the journal) with structured fields an operator
//! can filter on: `REASON_CODE`, `CHANNEL`, `TAPD_USER`, `SOURCE_ADDRESS`. The store keeps the
//! queryable copy; this is the second copy the design asks for.
//!
//! May depend on: `model`.

use crate::model::{AuditResult, NewAuditEvent};

/// Logs `event` at info (success) or warn (failure) under the `tapd::audit` target.
pub fn log(event: &NewAuditEvent) {
    let level = match event.result {
        AuditResult::Success => log::Level::Info,
        AuditResult::Failure => log::Level::Warn,
    };
    let result = match event.result {
        AuditResult::Success => "success",
        AuditResult::Failure => "failure",
    };
    let target = event.target.as_deref().unwrap_or("-");
    let reason = event.reason_code.as_deref().unwrap_or("-");
    let source = event.source_address.as_deref().unwrap_or("-");
    log::log!(
        target: "tapd::audit",
        level,
        channel = event.channel.as_str(),
        reason_code = reason,
        tapd_user = target,
        source_address = source;
        "audit: {} by {} on {}: {} ({}) via {} from {}",
        event.activity,
        event.actor,
        target,
        result,
        reason,
        event.channel.as_str(),
        source
    );
}
