//! Onboarding by mail, end to end: the real `tapd` and `tapctl`, a real SMTP server
//! (`python3-aiosmtpd`, STARTTLS required, certificate from a CA the test makes, see
//! `tests/support/smtp.rs`) on loopback, and the web sign-in.
//!
//! - a bulk list: every bad row is reported with its line and problem, nothing is created by a
//!   dry run, each good row's code reaches its recipient over TLS and signs the user in on the
//!   web; neither `tapctl`'s output, the audit log nor tapd's log holds a code; a mailbox the
//!   server refuses for good, or keeps deferring past the retry limit, ends failed with its TAP
//!   deleted and the failure in `tapctl onboarding status` and the audit;
//! - the SMTP server down for a while: nothing is lost, every message goes out once it is back;
//! - two nodes on one PostgreSQL database: each message is delivered exactly once;
//! - a 1,000-row list with five bad rows: five row errors and 995 messages (the time it takes
//!   is printed for BENCHMARKS.md, not asserted);
//! - rules against a real slapd: a group's new member, the manager as recipient, a hire-date
//!   window, a rule with both a group and a date (both must hold), and a lasting failure
//!   audited once across restarts (a changed one again);
//! - a queued message whose code was altered, replaced, or whose row can't be read: failed at
//!   once with its TAP deleted, the rest delivered.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use support::http::form_encode;
use support::slapd::add_values;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Request;
use serde_json::Value;

use support::config::{free_port, ConfigFile};
use support::daemon::{Launch, Tapd};
use support::http::{http, Answer};
use support::postgres::PostgresCluster;
use support::smtp::SmtpServer;
use support::tapctl::Tapctl;

const BASE_DN: &str = "dc=example,dc=org";

/// A directory of `staff` members (in the TAP policy's scope) and one `outsider`.
fn write_ldif(path: &Path, staff: &[String]) {
    let mut ldif = format!(
        "version: 1\n\ndn: {BASE_DN}\nobjectClass: top\nobjectClass: dcObject\n\
         objectClass: organization\no: onboarding\ndc: example\n\n\
         dn: ou=people,{BASE_DN}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{BASE_DN}\nobjectClass: organizationalUnit\nou: groups\n\n"
    );
    let mut users: Vec<&str> = staff.iter().map(String::as_str).collect();
    users.push("outsider");
    for (i, name) in users.iter().enumerate() {
        ldif.push_str(&format!(
            "dn: uid={name},ou=people,{BASE_DN}\nobjectClass: inetOrgPerson\n\
             entryUUID: 0b0a0000-0000-4000-8000-{i:012}\nuid: {name}\ncn: {name}\nsn: New\n\
             displayName: New hire {name}\nmail: {name}@example.org\n\n"
        ));
    }
    ldif.push_str(&format!(
        "dn: cn=staff,ou=groups,{BASE_DN}\nobjectClass: groupOfNames\n\
         entryUUID: 0b0a0000-0000-4000-9000-000000000001\ncn: staff\n"
    ));
    for name in staff {
        ldif.push_str(&format!("member: uid={name},ou=people,{BASE_DN}\n"));
    }
    std::fs::write(path, ldif).unwrap();
}

/// One tapd with `[smtp]` pointing at `smtp`.
struct Node {
    daemon: Tapd,
    tapctl: Tapctl,
    web: SocketAddr,
    public_url: String,
}

impl Node {
    fn start(
        dir: tempfile::TempDir,
        store_url: &str,
        ldif: &Path,
        smtp: &SmtpServer,
        smtp_lines: &str,
    ) -> Node {
        let socket = dir.path().join("admin.sock");
        let public_url = format!("http://localhost:{}", free_port());
        let mut config = ConfigFile::new()
            .store(store_url)
            .ldif_directory(ldif, BASE_DN)
            .string("directory", "preset", "openldap")
            .string("directory", "sync_interval", "1h")
            .admin(&socket)
            .web_on_loopback(&public_url)
            .string("smtp", "url", smtp.url())
            .string("smtp", "from", "tapd <tapd@example.org>")
            .string("smtp", "ca_file", smtp.ca_file().display())
            .string("smtp", "time_zone", "Europe/Berlin")
            .string("smtp", "retry_initial", "1s")
            .string("smtp", "retry_max", "2s")
            .lines("smtp", smtp_lines)
            .log_to_stderr()
            .no_metrics();
        if store_url.starts_with("postgres") {
            config = config.string(
                "store",
                "secrets_key_file",
                support::postgres::shared_secrets_key(store_url).display(),
            );
        }
        config.write(&dir.path().join("tapd.toml"));
        let daemon = Launch::new(dir)
            .listener("web")
            .listener("admin")
            .terminate_on_drop()
            .start();
        let node = Node {
            web: daemon.addr("web"),
            daemon,
            tapctl: Tapctl::new(socket),
            public_url,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !node
            .tapctl
            .output(&["user", "show", "outsider"])
            .status
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "tapd did not sync:\n{}",
                node.daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        node
    }

    fn enable_policy(&self) {
        self.tapctl.ok(&[
            "policy",
            "set",
            "--state",
            "enabled",
            "--include-groups",
            "staff",
        ]);
    }

    /// `tapctl [--json] tap bulk --csv FILE [--dry-run]`: (exit code, stdout, stderr).
    fn bulk(&self, csv: &Path, extra: &[&str]) -> (i32, String, String) {
        let mut args = vec!["tap", "bulk", "--csv"];
        let csv = csv.display().to_string();
        args.push(&csv);
        args.extend_from_slice(extra);
        let output = self.tapctl.output(&args);
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `tapctl onboarding status`, as JSON messages.
    fn status(&self) -> Vec<Value> {
        self.tapctl
            .json(&["onboarding", "status", "--limit", "2000"])["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (bounded) until `done` holds for the status listing.
    fn wait_status(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "{what}: {status:#?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn tap_of(&self, user: &str) -> Vec<Value> {
        self.tapctl.json(&["tap", "show", user])["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/tapd.db", dir.display())
}

fn message_of<'a>(status: &'a [Value], user: &str) -> &'a Value {
    status
        .iter()
        .find(|m| {
            m["userPrincipalName"]
                .as_str()
                .is_some_and(|u| u.starts_with(user))
        })
        .unwrap_or_else(|| panic!("no message for {user}: {status:#?}"))
}

/// The web's TAP sign-in with `code`, as a browser would post it.
async fn sign_in(node: &Node, user: &str, code: &str) -> Answer {
    let host = node.public_url.trim_start_matches("http://").to_owned();
    let page = http(
        node.web,
        Request::get("/")
            .header("host", &host)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    let csrf = page.cookie("tapd-csrf").expect("a CSRF cookie");
    let form = form_encode(&[("csrf", &csrf), ("username", user), ("code", code)]);
    http(
        node.web,
        Request::post("/sign-in/tap")
            .header("host", &host)
            .header("origin", &node.public_url)
            .header("cookie", format!("tapd-csrf={csrf}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .unwrap(),
    )
    .await
}

/// `tapctl tap bulk` for `users` (a list written in `dir`), each code mailed to
/// `mgr-USER@example.org`; every row must be queued.
fn bulk_to_managers(node: &Node, dir: &Path, users: &[String]) {
    let csv = dir.join("managers.csv");
    let mut list = "user,recipient\n".to_owned();
    for name in users {
        list.push_str(&format!("{name},mgr-{name}@example.org\n"));
    }
    std::fs::write(&csv, list).unwrap();
    let (code, stdout, stderr) = node.bulk(&csv, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_list_is_checked_row_by_row_and_each_code_is_mailed_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let ldif = dir.path().join("directory.ldif");
    let staff: Vec<String> = ["ann", "bob", "cid", "dan", "eve", "fay"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    write_ldif(&ldif, &staff);
    let smtp = SmtpServer::start_with(dir.path(), &["gone@example.net"], &["later@example.org"]);
    let tapd_dir = tempfile::tempdir().unwrap();
    let store = sqlite_url(tapd_dir.path());
    let node = Node::start(tapd_dir, &store, &ldif, &smtp, "max_attempts = 3");
    node.enable_policy();
    let csv = dir.path().join("list.csv");
    std::fs::write(
        &csv,
        "user,start,lifetime,one_time,recipient\n\
         ann,,60,true,boss@example.org\n\
         nosuch,,,,boss@example.org\n\
         bob,yesterday,,,boss@example.org\n\
         cid,,,,not-an-address\n\
         outsider,,,,boss@example.org\n\
         ann,,,,boss@example.org\n\
         dan,,,false,gone@example.net\n\
         eve,,,,\n\
         fay,,8h,,later@example.org\n\
         bob,,5,,boss@example.org\n",
    )
    .unwrap();
    let expected_errors = [
        (3, "unknown user \"nosuch\""),
        (4, "start \"yesterday\" is not an RFC 3339 date-time"),
        (5, "recipient \"not-an-address\" is not a mail address"),
        (6, "outside the TAP policy's scope"),
        (7, "is also on line 2"),
        (9, "no recipient"),
        (11, "is also on line 4"),
    ];

    // A dry run checks every row and creates nothing.
    let (code, stdout, stderr) = node.bulk(&csv, &["--dry-run"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("3 row(s) valid, 7 row(s) with errors"),
        "{stderr}"
    );
    for (line, problem) in expected_errors {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&line.to_string()) && l.contains(problem)),
            "line {line}: {problem:?} not reported:\n{stdout}"
        );
    }
    assert!(node.tap_of("ann").is_empty(), "a dry run created a TAP");
    assert!(node.status().is_empty());

    // The real run: the same errors, the good rows issued and queued.
    let run = node
        .tapctl
        .output(&["--json", "tap", "bulk", "--csv", &csv.display().to_string()]);
    assert_eq!(run.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&run.stdout).unwrap();
    let rows = answer["value"].as_array().unwrap();
    assert_eq!(rows.len(), 10);
    for (line, problem) in expected_errors {
        let row = rows.iter().find(|r| r["line"] == line).unwrap();
        assert_eq!(row["status"], "error", "{row}");
        assert!(row["error"].as_str().unwrap().contains(problem), "{row}");
    }
    for line in [2, 8, 10] {
        let row = rows.iter().find(|r| r["line"] == line).unwrap();
        assert_eq!(row["status"], "queued", "{row}");
    }
    assert_eq!(node.tap_of("ann").len(), 1);
    assert!(node.tap_of("bob").is_empty(), "a bad row created a TAP");

    // Ann's manager gets her code over TLS; it signs Ann in on the web.
    let mails = smtp.wait_for(1, Duration::from_secs(30));
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let mail = &mails[0];
    assert_eq!(mail.recipients, ["boss@example.org"]);
    assert!(mail.over_tls, "the message was sent without STARTTLS");
    let code = mail
        .value_after("Temporary Access Pass:")
        .expect("the code is in the message");
    assert!(code.len() >= 8, "{code:?}");
    let text = mail.decoded();
    assert!(
        text.contains(&format!("{}/sign-in", node.public_url)),
        "{text}"
    );
    assert!(text.contains("(Europe/Berlin)"), "{text}");
    assert!(text.contains("Content-Type: text/html"), "{text}");
    let signed_in = sign_in(&node, "ann", &code).await;
    assert!(
        signed_in
            .cookie("tapd-session")
            .is_some_and(|s| !s.is_empty()),
        "the mailed code did not sign ann in: {} {}",
        signed_in.status,
        signed_in.body
    );

    // Refused for good (550) at once; deferred (451) until the retry limit: both failed,
    // their TAPs deleted, the failure visible.
    let status = node.wait_status("dan and fay failed", |s| {
        s.iter().filter(|m| m["state"] == "failed").count() == 2
    });
    let dan = message_of(&status, "dan");
    assert!(dan["lastError"].as_str().unwrap().contains("550"), "{dan}");
    assert_eq!(dan["attempts"], 1);
    let fay = message_of(&status, "fay");
    assert_eq!(fay["attempts"], 3, "{fay}");
    assert!(
        fay["lastError"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{fay}"
    );
    assert_eq!(message_of(&status, "ann")["state"], "sent");
    assert!(
        node.tap_of("dan").is_empty(),
        "an undelivered pass stayed usable"
    );
    assert!(
        node.tap_of("fay").is_empty(),
        "an undelivered pass stayed usable"
    );
    let table = node.tapctl.ok(&["onboarding", "status"]);
    assert!(
        table.contains("failed") && table.contains("gone@example.net"),
        "{table}"
    );

    // The audit names each delivery target and outcome; no code anywhere an admin looks.
    let audit = node.tapctl.ok(&["--json", "audit", "--limit", "500"]);
    assert!(audit.contains("boss@example.org"), "{audit}");
    assert!(
        audit.contains("Onboarding mail accepted by the mail server"),
        "{audit}"
    );
    assert!(audit.contains("Onboarding mail delivery failed"), "{audit}");
    assert!(
        audit.contains("Onboarding mail delivery retried"),
        "{audit}"
    );
    for (what, text) in [
        ("the dry run", format!("{stdout}{stderr}")),
        (
            "the bulk output",
            String::from_utf8_lossy(&run.stdout).into_owned(),
        ),
        ("the audit", audit),
        ("the status", table),
        ("tapd's log", node.daemon.log_text()),
    ] {
        assert!(!text.contains(&code), "{what} shows the code");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_waits_while_the_smtp_server_is_down_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let ldif = dir.path().join("directory.ldif");
    let staff: Vec<String> = (0..3).map(|i| format!("hire{i}")).collect();
    write_ldif(&ldif, &staff);
    let mut smtp = SmtpServer::stopped_with(dir.path(), &[], &[]);
    let tapd_dir = tempfile::tempdir().unwrap();
    let store = sqlite_url(tapd_dir.path());
    let node = Node::start(tapd_dir, &store, &ldif, &smtp, "max_attempts = 50");
    node.enable_policy();
    bulk_to_managers(&node, dir.path(), &staff);
    // Down: every message stays queued, failed attempts counted.
    node.wait_status("attempts while the server is down", |s| {
        s.len() == 3
            && s.iter().all(|m| m["state"] == "queued")
            && s.iter().all(|m| m["attempts"].as_u64().unwrap_or(0) >= 2)
    });
    smtp.resume();
    let mails = smtp.wait_for(3, Duration::from_secs(30));
    assert_eq!(mails.len(), 3, "{mails:#?}");
    node.wait_status("all sent", |s| s.iter().all(|m| m["state"] == "sent"));
    std::thread::sleep(Duration::from_secs(2));
    let mut recipients: Vec<String> = smtp
        .messages()
        .into_iter()
        .flat_map(|m| m.recipients)
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        [
            "mgr-hire0@example.org",
            "mgr-hire1@example.org",
            "mgr-hire2@example.org"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgresql_deliver_each_message_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let ldif = dir.path().join("directory.ldif");
    let staff: Vec<String> = (0..40).map(|i| format!("hire{i:02}")).collect();
    write_ldif(&ldif, &staff);
    let smtp = SmtpServer::start(dir.path());
    let cluster = PostgresCluster::shared();
    let store = cluster.create_database().await;
    let a = Node::start(tempfile::tempdir().unwrap(), &store, &ldif, &smtp, "");
    let b = Node::start(tempfile::tempdir().unwrap(), &store, &ldif, &smtp, "");
    a.enable_policy();
    bulk_to_managers(&a, dir.path(), &staff);
    let mails = smtp.wait_for(40, Duration::from_secs(60));
    assert_eq!(mails.len(), 40);
    b.wait_status("all sent", |s| {
        s.len() == 40 && s.iter().all(|m| m["state"] == "sent")
    });
    // Both nodes keep polling: nothing is sent a second time.
    std::thread::sleep(Duration::from_secs(3));
    let mut recipients: Vec<String> = smtp
        .messages()
        .into_iter()
        .flat_map(|m| m.recipients)
        .collect();
    recipients.sort();
    let mut expected: Vec<String> = staff
        .iter()
        .map(|n| format!("mgr-{n}@example.org"))
        .collect();
    expected.sort();
    assert_eq!(recipients, expected, "each message exactly once");
    let audit = b.tapctl.json(&[
        "audit",
        "--limit",
        "500",
        "--activity",
        "Onboarding mail accepted by the mail server",
    ]);
    let accepted = audit["value"].as_array().map_or(0, Vec::len);
    assert_eq!(accepted, 40, "one acceptance recorded per message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_row_list_with_five_bad_rows_gives_five_errors_and_995_mails() {
    let dir = tempfile::tempdir().unwrap();
    let ldif = dir.path().join("directory.ldif");
    let staff: Vec<String> = (0..995).map(|i| format!("hire{i:04}")).collect();
    write_ldif(&ldif, &staff);
    let smtp = SmtpServer::start(dir.path());
    let tapd_dir = tempfile::tempdir().unwrap();
    let store = sqlite_url(tapd_dir.path());
    let node = Node::start(tapd_dir, &store, &ldif, &smtp, "");
    node.enable_policy();
    let csv = dir.path().join("list.csv");
    let mut list = "user,start,lifetime,one_time,recipient\n".to_owned();
    for (i, name) in staff.iter().enumerate() {
        list.push_str(&format!("{name},,,,mgr-{name}@example.org\n"));
        if i % 200 == 100 {
            list.push_str(&format!("nobody{i},,,,mgr@example.org\n"));
        }
    }
    std::fs::write(&csv, list).unwrap();
    let started = Instant::now();
    let (code, stdout, stderr) = node.bulk(&csv, &["--json"]);
    let issued = started.elapsed();
    assert_eq!(code, 1, "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    let rows = answer["value"].as_array().unwrap();
    assert_eq!(rows.len(), 1000);
    let errors: Vec<&Value> = rows.iter().filter(|r| r["status"] == "error").collect();
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert!(errors
        .iter()
        .all(|r| r["error"].as_str().unwrap().contains("unknown user")));
    let mails = smtp.wait_for(995, Duration::from_secs(300));
    let delivered = started.elapsed();
    assert_eq!(mails.len(), 995);
    println!(
        "BENCH onboarding bulk: 1000 rows (5 bad) issued in {:.1} s, 995 mails delivered {:.1} s after the start",
        issued.as_secs_f64(),
        delivered.as_secs_f64()
    );
}

/// A small directory for slapd: the service account tapd binds as, `old` already in
/// `new-hires`, `gadmin` in the role group `tap-admins`.
fn slapd_ldif() -> String {
    use support::slapd::{SERVICE_DN, SERVICE_PASSWORD};
    let mut ldif = format!(
        "dn: {BASE_DN}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n\
         o: onboarding\ndc: example\n\n"
    );
    for ou in ["people", "groups", "services"] {
        ldif.push_str(&format!(
            "dn: ou={ou},{BASE_DN}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
        ));
    }
    ldif.push_str(&format!(
        "dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
         cn: tapd\nuserPassword: {SERVICE_PASSWORD}\n\n"
    ));
    for name in ["old", "gadmin"] {
        ldif.push_str(&person(name));
    }
    ldif.push_str(&format!(
        "dn: cn=new-hires,ou=groups,{BASE_DN}\nobjectClass: groupOfNames\ncn: new-hires\n\
         member: uid=old,ou=people,{BASE_DN}\n\n\
         dn: cn=tap-admins,ou=groups,{BASE_DN}\nobjectClass: groupOfNames\ncn: tap-admins\n\
         member: uid=gadmin,ou=people,{BASE_DN}\n\n"
    ));
    ldif
}

fn person(name: &str) -> String {
    format!(
        "dn: uid={name},ou=people,{BASE_DN}\nobjectClass: inetOrgPerson\nuid: {name}\n\
         cn: {name}\nsn: Hire\ndisplayName: New hire {name}\nmail: {name}@example.org\n\n"
    )
}

/// One tapd syncing `slapd` (as the service account, full syncs on demand), mailing through
/// `smtp`, with `rules` as its `[[onboarding.rules]]` and `tap-admins` granting a role; it
/// returns once the first sync ran.
fn rule_node(slapd: &support::slapd::Slapd, smtp: &SmtpServer, rules: &[&str]) -> Node {
    use support::slapd::{SERVICE_DN, SERVICE_PASSWORD};
    let tapd_dir = tempfile::tempdir().unwrap();
    let secret = tapd_dir.path().join("ldap.secret");
    support::config::write_private(&secret, SERVICE_PASSWORD);
    let socket = tapd_dir.path().join("admin.sock");
    let public_url = format!("http://localhost:{}", free_port());
    let mut config = ConfigFile::new()
        .store(&sqlite_url(tapd_dir.path()))
        .string("directory", "url", slapd.url())
        .string("directory", "preset", "openldap")
        .string("directory", "base_dn", BASE_DN)
        .string("directory", "bind_dn", SERVICE_DN)
        .string("directory", "bind_password_file", secret.display())
        .string("directory", "sync_interval", "1h")
        .string("directory", "incremental_interval", "0s")
        .admin(&socket)
        .set(
            "admin.roles",
            "privileged_authentication_administrator",
            "[\"tap-admins\"]",
        )
        .web_on_loopback(&public_url)
        .string("smtp", "url", smtp.url())
        .string("smtp", "from", "tapd <tapd@example.org>")
        .string("smtp", "ca_file", smtp.ca_file().display());
    for rule in rules {
        config = config.entry("onboarding.rules", rule);
    }
    config
        .log_to_stderr()
        .no_metrics()
        .write(&tapd_dir.path().join("tapd.toml"));
    let daemon = Launch::new(tapd_dir)
        .listener("web")
        .listener("admin")
        .first_sync()
        .terminate_on_drop()
        .start();
    Node {
        web: daemon.addr("web"),
        daemon,
        tapctl: Tapctl::new(socket),
        public_url,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_to_the_rules_group_gets_one_tap_mailed_to_the_rules_recipient() {
    use support::slapd::Slapd;
    let slapd = Slapd::start(&slapd_ldif());
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(dir.path());
    let mut node = rule_node(
        &slapd,
        &smtp,
        &["name = \"new-hires\"\ngroup = \"new-hires\"\n\
           recipient = \"it-onboarding@example.org\"\nlifetime = \"8h\"\none_time = true"],
    );
    node.daemon
        .wait_for_log("the rule's first evaluation", |l| {
            l.contains("onboarding rule \"new-hires\": 1 current member(s)")
        });
    node.tapctl.ok(&[
        "policy",
        "set",
        "--state",
        "enabled",
        "--include-groups",
        "new-hires",
    ]);

    // A new hire and an administrator join the group in the directory.
    let mut admin = slapd.admin().await;
    admin
        .add(
            &format!("uid=newbie,ou=people,{BASE_DN}"),
            vec![
                ("objectClass", ["inetOrgPerson"].into()),
                ("uid", ["newbie"].into()),
                ("cn", ["newbie"].into()),
                ("sn", ["Hire"].into()),
                ("displayName", ["Nina Newbie"].into()),
                ("mail", ["newbie@example.org"].into()),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let members: std::collections::HashSet<String> = [
        format!("uid=newbie,ou=people,{BASE_DN}"),
        format!("uid=gadmin,ou=people,{BASE_DN}"),
    ]
    .into_iter()
    .collect();
    add_values(
        &mut admin,
        &format!("cn=new-hires,ou=groups,{BASE_DN}"),
        "member",
        members,
    )
    .await;
    node.tapctl.ok(&["sync", "run"]);

    let mails = smtp.wait_for(1, Duration::from_secs(30));
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(mails[0].recipients, ["it-onboarding@example.org"]);
    let text = mails[0].decoded();
    assert!(text.contains("Nina Newbie"), "{text}");
    let code = mails[0].value_after("Temporary Access Pass:").unwrap();
    let signed_in = sign_in(&node, "newbie", &code).await;
    assert!(
        signed_in
            .cookie("tapd-session")
            .is_some_and(|s| !s.is_empty()),
        "the mailed code did not sign newbie in: {} {}",
        signed_in.status,
        signed_in.body
    );
    assert!(
        node.tap_of("old").is_empty(),
        "a member from before the rule got a pass"
    );
    assert!(
        node.tap_of("gadmin").is_empty(),
        "an administrator got a pass"
    );

    // Another sync: the rule served newbie already; no second pass, no second mail.
    node.tapctl.ok(&["sync", "run"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(smtp.messages().len(), 1);
    let audit = node.tapctl.ok(&["--json", "audit", "--limit", "200"]);
    assert!(audit.contains("onboarding_admin_skipped"), "{audit}");
    assert!(audit.contains("it-onboarding@example.org"), "{audit}");
    assert!(!audit.contains(&code), "the audit shows the code");
    assert!(
        !node.daemon.log_text().contains(&code),
        "the log shows the code"
    );
    let status = node.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0]["origin"], "rule new-hires");
}

/// `person` with more attribute lines (`manager: …`, an auxiliary class and its values),
/// right after its structural class (slapadd wants each attribute's values together).
fn person_with(name: &str, extra: &str) -> String {
    person(name).replacen(
        "objectClass: inetOrgPerson\n",
        &format!("objectClass: inetOrgPerson\n{extra}\n"),
        1,
    )
}

/// A GeneralizedTime `days` days from today (UTC), as a directory writes a hire date.
fn hire_date(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days))
        .format("%Y%m%d000000Z")
        .to_string()
}

/// Rules that mail the user's manager: `new-hires` (by group, no recipient given) and
/// `hire-date` (by `employeeHireDate`, five days ahead, to a fixed mailbox, starting at 08:00
/// UTC on the hire date). The directory has `boss`, a disabled `lockedboss`, and a decoy whose
/// DN differs from boss's only in its branch (`cn=boss,ou=contractors`), with the lower id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_gets_the_code_a_user_without_one_waits_and_hire_dates_open_a_window() {
    use support::slapd::{Slapd, HIRE_DATE_SCHEMA};
    let mut ldif = slapd_ldif();
    ldif.push_str(&format!(
        "dn: ou=contractors,{BASE_DN}\nobjectClass: organizationalUnit\nou: contractors\n\n\
         dn: cn=boss,ou=contractors,{BASE_DN}\nobjectClass: inetOrgPerson\n\
         entryUUID: 00000000-0000-4000-8000-000000000001\nuid: cboss\ncn: boss\nsn: Decoy\n\
         mail: decoy@example.org\n\n"
    ));
    ldif.push_str(&person_with(
        "boss",
        "entryUUID: ffffffff-0000-4000-8000-000000000001",
    ));
    ldif.push_str(&person_with(
        "lockedboss",
        "pwdAccountLockedTime: 000001010000Z",
    ));
    ldif.push_str(&person_with(
        "soon",
        &format!("objectClass: tapdHire\nemployeeHireDate: {}", hire_date(3)),
    ));
    ldif.push_str(&person_with(
        "longago",
        &format!(
            "objectClass: tapdHire\nemployeeHireDate: {}",
            hire_date(-40)
        ),
    ));
    let slapd = Slapd::start_with_schema(&ldif, HIRE_DATE_SCHEMA);
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(dir.path());
    let mut node = rule_node(
        &slapd,
        &smtp,
        &[
            "name = \"new-hires\"\ngroup = \"new-hires\"\nlifetime = \"8h\"\none_time = true",
            "name = \"hire-date\"\ndate_attribute = \"employeeHireDate\"\ndays_before = 5\n\
             recipient = \"hr@example.org\"\nstart_time = \"08:00\"\ntime_zone = \"UTC\"\n\
             lifetime = \"8h\"",
        ],
    );
    node.daemon
        .wait_for_log("the group rule's first evaluation", |l| {
            l.contains("onboarding rule \"new-hires\": 1 current member(s)")
        });
    node.tapctl.ok(&[
        "policy",
        "set",
        "--state",
        "enabled",
        "--include-groups",
        "new-hires",
    ]);

    // The date rule: hired in three days (within five) gets a pass that starts at 08:00 on
    // the hire date; hired forty days ago gets none.
    let mails = smtp.wait_for(1, Duration::from_secs(30));
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(mails[0].recipients, ["hr@example.org"]);
    assert!(mails[0].decoded().contains("New hire soon"));
    let soon = node.tap_of("soon");
    assert_eq!(soon.len(), 1, "{soon:#?}");
    let day = (chrono::Utc::now() + chrono::Duration::days(3)).format("%Y-%m-%dT08:00:00");
    assert!(
        soon[0]["startDateTime"]
            .as_str()
            .unwrap()
            .starts_with(&day.to_string()),
        "{soon:#?}"
    );
    assert!(node.tap_of("longago").is_empty(), "an old hire got a pass");
    let shown = node.tapctl.json(&["user", "show", "soon"]);
    assert!(
        shown["onboardingDates"]["employeehiredate"].is_string(),
        "{shown}"
    );

    // Three new hires join the group: one with boss as manager, one with none, one whose
    // manager is disabled.
    let mut admin = slapd.admin().await;
    for (name, manager) in [
        ("newbie", Some("boss")),
        ("orphan", None),
        ("lockee", Some("lockedboss")),
    ] {
        let value = |v: String| std::collections::HashSet::from([v]);
        let mut attributes = vec![
            ("objectClass".to_owned(), value("inetOrgPerson".to_owned())),
            ("uid".to_owned(), value(name.to_owned())),
            ("cn".to_owned(), value(name.to_owned())),
            ("sn".to_owned(), value("Hire".to_owned())),
            ("mail".to_owned(), value(format!("{name}@example.org"))),
        ];
        if let Some(manager) = manager {
            attributes.push((
                "manager".to_owned(),
                value(format!("uid={manager},ou=people,{BASE_DN}")),
            ));
        }
        admin
            .add(&format!("uid={name},ou=people,{BASE_DN}"), attributes)
            .await
            .unwrap()
            .success()
            .unwrap();
    }
    let members: std::collections::HashSet<String> = ["newbie", "orphan", "lockee"]
        .iter()
        .map(|n| format!("uid={n},ou=people,{BASE_DN}"))
        .collect();
    add_values(
        &mut admin,
        &format!("cn=new-hires,ou=groups,{BASE_DN}"),
        "member",
        members,
    )
    .await;
    node.tapctl.ok(&["sync", "run"]);

    // Newbie's code goes to boss (not the decoy, not newbie) and signs newbie in.
    let mails = smtp.wait_for(2, Duration::from_secs(30));
    assert_eq!(mails.len(), 2, "{mails:#?}");
    assert_eq!(mails[1].recipients, ["boss@example.org"]);
    assert!(mails[1].decoded().contains("newbie"));
    let code = mails[1].value_after("Temporary Access Pass:").unwrap();
    let signed_in = sign_in(&node, "newbie", &code).await;
    assert!(
        signed_in
            .cookie("tapd-session")
            .is_some_and(|s| !s.is_empty()),
        "the code mailed to the manager did not sign newbie in: {} {}",
        signed_in.status,
        signed_in.body
    );
    let shown = node.tapctl.json(&["user", "show", "newbie"]);
    assert_eq!(
        shown["manager"]["userPrincipalName"], "boss@example.org",
        "{shown}"
    );
    assert!(node
        .tapctl
        .ok(&["user", "show", "newbie"])
        .contains("boss@example.org"));

    // Orphan (no manager) and lockee (a disabled manager): no pass, and the audit says why.
    assert!(
        node.tap_of("orphan").is_empty(),
        "a pass with nowhere to go"
    );
    assert!(
        node.tap_of("lockee").is_empty(),
        "a disabled manager was mailed"
    );
    let failures = node.tapctl.json(&["audit", "--limit", "200"]);
    let failed_for = |user: &str| -> Vec<Value> {
        failures["value"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e.to_string().contains("onboarding_no_recipient")
                    && e.to_string().contains(&format!("{user}@example.org"))
            })
            .cloned()
            .collect()
    };
    assert_eq!(failed_for("orphan").len(), 1, "{failures:#}");
    let lockee = failed_for("lockee");
    assert_eq!(lockee.len(), 1, "{failures:#}");
    assert!(lockee[0].to_string().contains("disabled"), "{lockee:#?}");
    let audit = node.tapctl.ok(&["--json", "audit", "--limit", "200"]);
    // The issuance's audit names the manager as the delivery target.
    let to_boss = failures["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::to_string)
        .find(|e| e.contains("recipientKind") && e.contains("newbie@example.org"))
        .unwrap_or_else(|| panic!("no issuance for newbie: {failures:#}"));
    assert!(
        to_boss.contains("manager") && to_boss.contains("boss@example.org"),
        "{to_boss}"
    );
    assert!(!audit.contains(&code), "the audit shows the code");

    // Another sync without a change: still nothing for them, and audited only once.
    node.tapctl.ok(&["sync", "run"]);
    assert!(node.tap_of("orphan").is_empty());
    let again = node.tapctl.json(&["audit", "--limit", "200"]);
    let count = again["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.to_string().contains("onboarding_no_recipient"))
        .count();
    assert_eq!(count, 2, "a lasting failure is audited once: {again:#}");

    // The directory gets a manager for orphan: the next sync serves them, mailing boss.
    add_values(
        &mut admin,
        &format!("uid=orphan,ou=people,{BASE_DN}"),
        "manager",
        [format!("uid=boss,ou=people,{BASE_DN}")],
    )
    .await;
    node.tapctl.ok(&["sync", "run"]);
    let mails = smtp.wait_for(3, Duration::from_secs(30));
    assert_eq!(mails.len(), 3, "{mails:#?}");
    assert_eq!(mails[2].recipients, ["boss@example.org"]);
    assert_eq!(node.tap_of("orphan").len(), 1);
    assert!(node.tap_of("lockee").is_empty());
    node.tapctl.ok(&["sync", "run"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(smtp.messages().len(), 3, "one pass per user and rule");

    // A bulk row without a recipient mails the user's manager, and refuses a user whose
    // manager can't be mailed.
    let csv = dir.path().join("list.csv");
    std::fs::write(&csv, "user,recipient\nnewbie,\nlockee,\n").unwrap();
    let (code, stdout, stderr) = node.bulk(&csv, &["--json"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let rows: Value = serde_json::from_str(&stdout).unwrap();
    let rows = rows["value"].as_array().unwrap();
    assert_eq!(rows[0]["status"], "queued", "{rows:#?}");
    assert_eq!(rows[0]["recipient"], "boss@example.org", "{rows:#?}");
    assert_eq!(rows[1]["status"], "error", "{rows:#?}");
    let error = rows[1]["error"].as_str().unwrap();
    assert!(
        error.contains("no recipient") && error.contains("disabled"),
        "{error}"
    );
    let mails = smtp.wait_for(4, Duration::from_secs(30));
    assert_eq!(mails.len(), 4, "{mails:#?}");
    assert_eq!(mails[3].recipients, ["boss@example.org"]);
    assert!(node.tap_of("lockee").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_code_that_cant_be_unsealed_or_read_fails_at_once_and_its_tap_is_deleted() {
    use support::sqlite::sqlite3;
    let dir = tempfile::tempdir().unwrap();
    let ldif = dir.path().join("directory.ldif");
    let staff: Vec<String> = ["altered", "planted", "damaged", "intact"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    write_ldif(&ldif, &staff);
    let mut smtp = SmtpServer::stopped_with(dir.path(), &[], &[]);
    let tapd_dir = tempfile::tempdir().unwrap();
    let store = sqlite_url(tapd_dir.path());
    let mut node = Node::start(tapd_dir, &store, &ldif, &smtp, "max_attempts = 50");
    node.enable_policy();
    bulk_to_managers(&node, dir.path(), &staff);
    node.wait_status("an attempt while the server is down", |s| {
        s.len() == 4
            && s.iter()
                .all(|m| m["state"] == "queued" && m["attempts"].as_u64().unwrap_or(0) >= 1)
    });

    // tapd stopped, someone with write access to the database alters one sealed code (a
    // character of its ciphertext), replaces another with a code of their own, and writes
    // text where a third message's expiry belongs.
    node.daemon.terminate();
    let db = node.daemon.dir().join("tapd.db");
    sqlite3(
        &db,
        "UPDATE outbox SET sealed_code = substr(sealed_code, 1, length(sealed_code) - 10) \
         || (CASE substr(sealed_code, length(sealed_code) - 9, 1) WHEN 'A' THEN 'B' ELSE 'A' END) \
         || substr(sealed_code, length(sealed_code) - 8) WHERE upn LIKE 'altered%'",
    );
    sqlite3(
        &db,
        "UPDATE outbox SET sealed_code = 'PLANTED1234' WHERE upn LIKE 'planted%'",
    );
    sqlite3(
        &db,
        "UPDATE outbox SET tap_expires = 'tomorrow' WHERE upn LIKE 'damaged%'",
    );
    assert_eq!(
        sqlite3(
            &db,
            "SELECT count(*) FROM outbox WHERE sealed_code LIKE 'sealed:v1:%'"
        ),
        "3",
        "the tampering missed"
    );

    // Back with the mail server up: all three fail at their first attempt, their TAPs
    // deleted; the intact message goes out.
    smtp.resume();
    node.daemon.restart();
    let status = node.wait_status("three messages failed and one sent", |s| {
        s.iter().filter(|m| m["state"] == "failed").count() == 3
            && s.iter().filter(|m| m["state"] == "sent").count() == 1
    });
    for (user, reason, cause) in [
        (
            "altered",
            "the sealed code can't be opened with the current secrets key",
            "does not authenticate",
        ),
        (
            "planted",
            "the sealed code can't be opened with the current secrets key",
            "not a well-formed sealed value",
        ),
        ("damaged", "the stored message can't be read", "tap_expires"),
    ] {
        let message = message_of(&status, user);
        assert_eq!(message["state"], "failed", "{message}");
        let error = message["lastError"].as_str().unwrap_or_default();
        assert!(error.contains(reason) && error.contains(cause), "{message}");
        assert!(
            node.tap_of(user).is_empty(),
            "{user}'s undelivered pass stayed usable"
        );
        let logged = node.daemon.log().into_iter().any(|line| {
            line.starts_with("ERROR")
                && line.contains(message["id"].as_str().unwrap())
                && line.contains(reason)
        });
        assert!(logged, "no error logged for {user}'s message");
    }
    assert_eq!(message_of(&status, "intact")["state"], "sent");
    assert_eq!(node.tap_of("intact").len(), 1);
    let table = node.tapctl.ok(&["onboarding", "status"]);
    assert!(
        table.contains("failed") && table.contains("mgr-altered@example.org"),
        "{table}"
    );
    let audit = node.tapctl.json(&[
        "audit",
        "--limit",
        "100",
        "--activity",
        "Onboarding mail delivery failed",
    ]);
    let failures = audit["value"].as_array().cloned().unwrap_or_default();
    assert_eq!(failures.len(), 3, "{audit:#}");
    assert!(
        failures.iter().all(|e| {
            let e = e.to_string();
            e.contains("can't be opened") || e.contains("can't be read")
        }),
        "{audit:#}"
    );

    // The mailbox got the intact message only: nothing carrying the planted code.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(smtp.recipients(), ["mgr-intact@example.org"]);
    assert!(smtp
        .messages()
        .iter()
        .all(|m| !m.decoded().contains("PLANTED1234")));
}

/// A rule with a group and a date serves a user only when both hold: in the group with the
/// date in the window gets the pass; in the group with the date far ahead or long past, or
/// with the date but outside the group, gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_with_a_group_and_a_date_needs_both() {
    use support::slapd::{Slapd, HIRE_DATE_SCHEMA};
    let hired = |days| {
        format!(
            "objectClass: tapdHire\nemployeeHireDate: {}",
            hire_date(days)
        )
    };
    let mut ldif = slapd_ldif().replace(
        &format!("member: uid=old,ou=people,{BASE_DN}\n"),
        &["old", "starter", "later", "veteran"]
            .iter()
            .map(|n| format!("member: uid={n},ou=people,{BASE_DN}\n"))
            .collect::<String>(),
    );
    ldif.push_str(&person_with("starter", &hired(3)));
    ldif.push_str(&person_with("later", &hired(40)));
    ldif.push_str(&person_with("veteran", &hired(-40)));
    ldif.push_str(&person_with("stranger", &hired(3)));
    let slapd = Slapd::start_with_schema(&ldif, HIRE_DATE_SCHEMA);
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(dir.path());
    let node = rule_node(
        &slapd,
        &smtp,
        &[
            "name = \"joiners\"\ngroup = \"new-hires\"\ndate_attribute = \"employeeHireDate\"\n\
           days_before = 5\nrecipient = \"hr@example.org\"\nlifetime = \"8h\"",
        ],
    );
    node.tapctl.ok(&[
        "policy",
        "set",
        "--state",
        "enabled",
        "--include-groups",
        "new-hires",
    ]);
    node.tapctl.ok(&["sync", "run"]);

    let mails = smtp.wait_for(1, Duration::from_secs(30));
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(mails[0].recipients, ["hr@example.org"]);
    assert!(
        mails[0].decoded().contains("New hire starter"),
        "{mails:#?}"
    );
    assert_eq!(node.tap_of("starter").len(), 1);
    // Once more, so every user was evaluated again with the policy enabled.
    node.tapctl.ok(&["sync", "run"]);
    std::thread::sleep(Duration::from_secs(2));
    for user in ["later", "veteran", "stranger", "old"] {
        assert!(node.tap_of(user).is_empty(), "{user} got a pass");
    }
    let status = node.status();
    assert_eq!(status.len(), 1, "{status:#?}");
    assert_eq!(smtp.messages().len(), 1);
}

/// The audit events of `reason` about `user` so far.
fn rule_failures(node: &Node, reason: &str, user: &str) -> Vec<String> {
    node.tapctl.json(&["audit", "--limit", "500"])["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::to_string)
        .filter(|e| e.contains(reason) && e.contains(&format!("{user}@example.org")))
        .collect()
}

/// A lasting failure of a rule (no recipient for the code, an admin skipped) is audited once,
/// not again after a restart; a changed failure is audited, once as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lasting_rule_failure_is_audited_once_across_restarts() {
    use support::slapd::{Slapd, HIRE_DATE_SCHEMA};
    let hired = |days| {
        format!(
            "objectClass: tapdHire\nemployeeHireDate: {}",
            hire_date(days)
        )
    };
    let mut ldif = slapd_ldif().replace(&person("gadmin"), &person_with("gadmin", &hired(3)));
    ldif.push_str(&person_with("orphan", &hired(3)));
    ldif.push_str(&person_with(
        "lockedboss",
        "pwdAccountLockedTime: 000001010000Z",
    ));
    let slapd = Slapd::start_with_schema(&ldif, HIRE_DATE_SCHEMA);
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(dir.path());
    let mut node = rule_node(
        &slapd,
        &smtp,
        &[
            "name = \"hire-date\"\ndate_attribute = \"employeeHireDate\"\ndays_before = 5\n\
           lifetime = \"8h\"",
        ],
    );
    node.tapctl.ok(&["sync", "run"]);
    let audited_once = |node: &Node, when: &str| {
        let orphan = rule_failures(node, "onboarding_no_recipient", "orphan");
        assert_eq!(orphan.len(), 1, "{when}: {orphan:#?}");
        let admin = rule_failures(node, "onboarding_admin_skipped", "gadmin");
        assert_eq!(admin.len(), 1, "{when}: {admin:#?}");
        orphan
    };
    let orphan = audited_once(&node, "first syncs");
    assert!(orphan[0].contains("names no manager"), "{orphan:#?}");

    node.daemon.terminate();
    node.daemon.restart();
    node.tapctl.ok(&["sync", "run"]);
    audited_once(&node, "after a restart");

    // The failure changes (a manager now, but a disabled one): audited, once.
    let mut admin = slapd.admin().await;
    add_values(
        &mut admin,
        &format!("uid=orphan,ou=people,{BASE_DN}"),
        "manager",
        [format!("uid=lockedboss,ou=people,{BASE_DN}")],
    )
    .await;
    node.tapctl.ok(&["sync", "run"]);
    node.tapctl.ok(&["sync", "run"]);
    let changed = rule_failures(&node, "onboarding_no_recipient", "orphan");
    assert_eq!(changed.len(), 2, "{changed:#?}");
    assert!(
        changed.iter().any(|e| e.contains("disabled")),
        "{changed:#?}"
    );
    node.daemon.terminate();
    node.daemon.restart();
    node.tapctl.ok(&["sync", "run"]);
    assert_eq!(
        rule_failures(&node, "onboarding_no_recipient", "orphan").len(),
        2
    );
    assert!(node.tap_of("orphan").is_empty());
    assert!(smtp.messages().is_empty());
}
