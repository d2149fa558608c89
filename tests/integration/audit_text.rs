//! Audit text is attacker-controlled (a typed name, a RADIUS User-Name, a directory
//! attribute): control characters in it must never reach an administrator's terminal raw
//! through `tapctl audit` (issue 15). The front ends refuse control characters in typed
//! names, so the hostile event is written through the store API into the running daemon's
//! store, as an older tapd or any path carrying arbitrary text could have written it; the
//! admin path is tried too, with a hostile user name.

use tapd::model::{AuditResult, Channel, NewAuditEvent};
use tapd::store::sqlite::{SqliteStore, DEFAULT_BUSY_TIMEOUT};
use tapd::store::Store;

use super::harness::{Tapd, Who};
use crate::support::audit;

/// ESC sequences (clear screen, set title), BEL, CR (overwrite the line), NUL, DEL, a C1 CSI
/// and a right-to-left override.
const HOSTILE: &str = "eve\u{1b}]0;pwned\u{7}\r\u{1b}[2J\u{0}\u{7f}\u{9b}31m\u{202e}gpj.exe";

/// The bytes a terminal would act on, if any is in `text`.
fn steering(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c))
        .collect()
}

#[test]
fn control_characters_in_audit_text_never_reach_tapctl_output_raw() {
    let tapd = Tapd::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&tapd.db_path(), DEFAULT_BUSY_TIMEOUT)
            .await
            .unwrap();
        store
            .append_audit(&NewAuditEvent {
                time: chrono::Utc::now(),
                actor: HOSTILE.to_owned(),
                activity: format!("Sign-in activity {HOSTILE}"),
                target: Some(HOSTILE.to_owned()),
                result: AuditResult::Failure,
                reason_code: Some(format!("tap_not_found{HOSTILE}")),
                channel: Channel::Web,
                source_address: Some(format!("127.0.0.1:1{HOSTILE}")),
                details: serde_json::json!({ "userPrincipalName": HOSTILE }),
            })
            .await
            .unwrap();
    });
    // The admin path with a hostile name: refused, whatever it audits.
    // (argv can't carry a NUL.)
    let name = HOSTILE.replace('\0', "");
    let refused = tapd.tapctl(Who::Root, &["tap", "create", &name]);
    assert_ne!(refused.code(), Some(0), "{refused}");
    assert!(steering(&refused.stderr).is_empty(), "{:?}", refused.stderr);
    assert!(steering(&refused.stdout).is_empty(), "{:?}", refused.stdout);

    for args in [
        &["audit", "--limit", "20"][..],
        &["--json", "audit", "--limit", "20"],
    ] {
        let out = tapd.tapctl(Who::Root, args);
        let text = out.ok();
        assert!(
            steering(text).is_empty(),
            "raw control characters in `tapctl {}`: {text:?}",
            args.join(" ")
        );
        assert!(steering(&out.stderr).is_empty(), "{:?}", out.stderr);
        // The event is there, escaped, not dropped.
        assert!(text.contains("eve"), "{text}");
        assert!(text.contains("pwned"), "{text}");
        assert!(text.contains("u001b"), "{text}");
        assert!(text.contains("u009b"), "{text}");
    }
    // --json output is still JSON, and carries the text exactly.
    let json = tapd
        .tapctl(Who::Root, &["--json", "audit", "--limit", "20"])
        .json();
    let events = json["value"].as_array().unwrap();
    assert!(
        events.iter().any(|e| audit::initiator(e) == Some(HOSTILE)
            || audit::initiator(e) == Some(&HOSTILE.replace('\0', "\u{fffd}"))),
        "{json}"
    );
}
