//! Writes audit events to the log (and so to the journal) with structured fields an operator
//! can filter on: `REASON_CODE`, `CHANNEL`, `TAPD_USER`, `SOURCE_ADDRESS`, and `RADIUS_CLIENT`
//! for RADIUS events (`journalctl -u tapd REASON_CODE=tap_not_supported_radius`). The store
//! keeps the queryable copy; this is the second copy the design asks for.
//!
//! The fields are `log` key-values with snake_case keys; `systemd-journal-logger` turns each
//! key into a journal field name by upper-casing it (`reason_code` → `REASON_CODE`). The RADIUS
//! client's configured name is taken from the event's details under
//! [`RADIUS_CLIENT_DETAIL`], so the RADIUS path only has to put it there.
//!
//! May depend on: `model`.

use crate::model::{AuditResult, NewAuditEvent};

/// Key in [`NewAuditEvent::details`] holding the configured name of the RADIUS client a
/// request came from; logged as the `RADIUS_CLIENT` journal field.
pub const RADIUS_CLIENT_DETAIL: &str = "radiusClient";

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
    let channel = event.channel.as_str();
    match event
        .details
        .get(RADIUS_CLIENT_DETAIL)
        .and_then(|client| client.as_str())
    {
        Some(client) => log::log!(
            target: "tapd::audit",
            level,
            channel = channel,
            reason_code = reason,
            tapd_user = target,
            source_address = source,
            radius_client = client;
            "audit: {} by {} on {}: {} ({}) via {} client {} from {}",
            event.activity,
            event.actor,
            target,
            result,
            reason,
            channel,
            client,
            source
        ),
        None => log::log!(
            target: "tapd::audit",
            level,
            channel = channel,
            reason_code = reason,
            tapd_user = target,
            source_address = source;
            "audit: {} by {} on {}: {} ({}) via {} from {}",
            event.activity,
            event.actor,
            target,
            result,
            reason,
            channel,
            source
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use log::kv::{Key, Value, VisitSource};
    use serde_json::json;

    use super::*;
    use crate::model::Channel;

    /// Captures the key-values of audit records whose message contains a marker.
    struct Capture(Mutex<Vec<(String, BTreeMap<String, String>)>>);

    struct Keys<'a>(&'a mut BTreeMap<String, String>);

    impl<'kvs> VisitSource<'kvs> for Keys<'_> {
        fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
            self.0.insert(key.to_string(), value.to_string());
            Ok(())
        }
    }

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            let message = record.args().to_string();
            if record.target() == "tapd::audit" && message.contains("audit-field-test") {
                let mut keys = BTreeMap::new();
                record.key_values().visit(&mut Keys(&mut keys)).unwrap();
                self.0.lock().unwrap().push((message, keys));
            }
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

    fn event(channel: Channel, details: serde_json::Value) -> NewAuditEvent {
        NewAuditEvent {
            time: chrono::Utc::now(),
            actor: "vpn".into(),
            activity: "audit-field-test sign-in".into(),
            target: Some("alice@example.org".into()),
            result: AuditResult::Failure,
            reason_code: Some("tap_not_supported_radius".into()),
            channel,
            source_address: Some("127.0.0.1:40000".into()),
            details,
        }
    }

    /// Journal field names, as systemd-journal-logger derives them from the keys (it
    /// upper-cases each key; see its `JournalLog` docs).
    fn journal_fields(keys: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        keys.iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
            .collect()
    }

    #[test]
    fn audit_lines_carry_the_journal_fields() {
        // The only test in this crate that installs a logger.
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Trace);
        log(&event(
            Channel::Radius,
            json!({ RADIUS_CLIENT_DETAIL: "vpn" }),
        ));
        log(&event(Channel::Web, json!({})));
        let captured = CAPTURE.0.lock().unwrap().clone();
        assert_eq!(captured.len(), 2, "{captured:?}");

        let radius = journal_fields(&captured[0].1);
        assert_eq!(radius["REASON_CODE"], "tap_not_supported_radius");
        assert_eq!(radius["CHANNEL"], "radius");
        assert_eq!(radius["TAPD_USER"], "alice@example.org");
        assert_eq!(radius["SOURCE_ADDRESS"], "127.0.0.1:40000");
        assert_eq!(radius["RADIUS_CLIENT"], "vpn");
        assert!(captured[0].0.contains("client vpn"));

        let web = journal_fields(&captured[1].1);
        assert_eq!(web["CHANNEL"], "web");
        assert!(!web.contains_key("RADIUS_CLIENT"));
    }
}
