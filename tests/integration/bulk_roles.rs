//! `tapctl tap bulk` as administrators of different roles: each row is held to the role rules
//! of a single create (an authentication administrator can't serve privileged users or
//! themselves), refused rows create nothing, and a caller without a TAP role is refused
//! outright. A real SMTP server (`tests/support/smtp.rs`) receives the good rows' mail.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use super::harness::{Tapd, Who};
use crate::support::smtp::SmtpServer;

const AA: Who = Who::Local("tapit-aa");
const MEM: Who = Who::Local("tapit-mem");

#[test]
fn each_bulk_row_is_held_to_the_role_rules_of_a_single_create() {
    let mail_dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(mail_dir.path());
    let (url, ca) = (smtp.url(), smtp.ca_file());
    let tapd = Tapd::start_with(|config| {
        config
            .string("web", "public_url", "https://tapd.example.test")
            .string("smtp", "url", &url)
            .string("smtp", "from", "tapd@example.test")
            .string("smtp", "ca_file", ca.display())
    });
    tapd.tapctl(
        Who::Root,
        &[
            "policy",
            "set",
            "--state",
            "enabled",
            "--include-groups",
            "tapit-users",
        ],
    )
    .ok();
    let csv = tapd.root().join("list.csv");
    std::fs::write(
        &csv,
        "user,recipient\n\
         tapit-m1,boss@example.test\n\
         tapit-pa,boss@example.test\n\
         tapit-aa,boss@example.test\n\
         tapit-ga,boss@example.test\n",
    )
    .unwrap();
    std::fs::set_permissions(&csv, std::fs::Permissions::from_mode(0o644)).unwrap();
    let csv = csv.display().to_string();

    let run = tapd.tapctl(AA, &["--json", "tap", "bulk", "--csv", &csv]);
    assert_eq!(run.code(), Some(1), "{run}");
    let answer: Value = serde_json::from_str(&run.stdout).unwrap();
    let rows = answer["value"].as_array().unwrap();
    let row = |line: u64| rows.iter().find(|r| r["line"] == line).unwrap();
    assert_eq!(row(2)["status"], "queued", "{run}");
    for line in [3, 4, 5] {
        assert_eq!(row(line)["status"], "error", "{run}");
    }
    assert!(
        row(4)["error"].as_str().unwrap().contains("for themselves"),
        "{run}"
    );
    for line in [3, 5] {
        assert!(
            row(line)["error"].as_str().unwrap().contains("privileged"),
            "line {line}: {run}"
        );
    }
    for user in ["tapit-pa", "tapit-aa", "tapit-ga"] {
        let taps = tapd
            .tapctl(Who::Root, &["--json", "tap", "show", user])
            .json();
        assert_eq!(taps["value"], Value::Array(Vec::new()), "{user} got a TAP");
    }
    let mails = smtp.wait_for(1, Duration::from_secs(30));
    assert_eq!(mails.len(), 1);

    // No TAP role at all: the whole list is refused.
    let refused = tapd.tapctl(MEM, &["tap", "bulk", "--csv", &csv]);
    assert_eq!(refused.code(), Some(1), "{refused}");
    assert!(
        refused.stderr.contains("holds no tapd administrator role"),
        "{refused}"
    );
}
