//! Unit tests of the parts that need no server: URL and TLS-mode parsing, redaction, the text
//! and time conversions, and plan de-duplication. Everything that talks to PostgreSQL is in
//! the store conformance suite (`tests/store_conformance.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{TimeZone, Utc};
use tokio_postgres::config::SslMode as DriverSslMode;

use super::connect::redact;
use super::rows::{text, to_db_bound, to_db_time};
use super::{last_by_id, PostgresUrl, SslMode};

#[test]
fn url_default_is_prefer_and_application_name_tapd() {
    // On loopback (issue 15: a remote server now defaults to verify-full, tested below).
    let url = PostgresUrl::parse("postgres://tapd@127.0.0.1:5433/tapd").unwrap();
    assert_eq!(url.ssl_mode, SslMode::Prefer);
    assert_eq!(url.driver.get_ssl_mode(), DriverSslMode::Prefer);
    assert_eq!(url.driver.get_application_name(), Some("tapd"));
    assert_eq!(url.driver.get_dbname(), Some("tapd"));
    assert_eq!(url.driver.get_ports(), [5433]);
    assert!(!url.has_password());
}

#[test]
fn url_sslmodes_map_to_driver_modes() {
    for (mode, ours, driver) in [
        ("disable", SslMode::Disable, DriverSslMode::Disable),
        ("prefer", SslMode::Prefer, DriverSslMode::Prefer),
        ("require", SslMode::Require, DriverSslMode::Require),
        ("verify-ca", SslMode::VerifyCa, DriverSslMode::Require),
        ("verify-full", SslMode::VerifyFull, DriverSslMode::Require),
    ] {
        let url = PostgresUrl::parse(&format!(
            "postgresql://tapd@db/tapd?connect_timeout=3&sslmode={mode}&application_name=node1"
        ))
        .unwrap();
        assert_eq!(url.ssl_mode, ours, "{mode}");
        assert_eq!(url.driver.get_ssl_mode(), driver, "{mode}");
        assert_eq!(url.driver.get_application_name(), Some("node1"));
    }
}

#[test]
fn url_refusals_name_the_problem_and_hide_the_password() {
    let err = PostgresUrl::parse("postgres://tapd:hunter2@db/tapd?sslmode=allow").unwrap_err();
    assert!(err.contains("sslmode=allow"), "{err}");
    let err = PostgresUrl::parse("postgres://tapd@db/tapd?sslrootcert=/etc/ca.pem").unwrap_err();
    assert!(err.contains("ca_file"), "{err}");
    let err = PostgresUrl::parse("postgres://tapd@db/tapd?sslcert=/c.pem").unwrap_err();
    assert!(err.contains("client certificates"), "{err}");
    let err = PostgresUrl::parse("postgres://tapd:hunter2@db/tapd?bogus=1").unwrap_err();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("***"), "{err}");
    let err = PostgresUrl::parse("postgres:///tapd").unwrap_err();
    assert!(err.contains("no host"), "{err}");
}

#[test]
fn url_with_password_and_unix_socket_host() {
    let url = PostgresUrl::parse("postgres://tapd:s3cret@%2Frun%2Fpostgresql/tapd").unwrap();
    assert!(url.has_password());
    assert!(
        !format!("{url:?}").contains("s3cret"),
        "Debug never shows the password"
    );
}

#[test]
fn redaction() {
    assert_eq!(
        redact("postgres://u:pw@h:5432/db?sslmode=require"),
        "postgres://u:***@h:5432/db?sslmode=require"
    );
    assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(redact("postgres://h/db?x=a@b"), "postgres://h/db?x=a@b");
}

#[test]
fn nul_becomes_replacement_character() {
    assert_eq!(text("alice"), "alice");
    assert!(matches!(text("alice"), std::borrow::Cow::Borrowed(_)));
    assert_eq!(text("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
}

#[test]
fn times_are_cut_to_the_microsecond_downwards() {
    let t = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
    assert_eq!(to_db_time(t).timestamp_subsec_nanos(), 123_456_000);
    let before_epoch = Utc.timestamp_opt(-1, 999_999_999).unwrap();
    assert_eq!(
        to_db_time(before_epoch).timestamp_micros(),
        before_epoch.timestamp_micros()
    );
    let ancient = chrono::DateTime::<Utc>::MIN_UTC;
    assert!(to_db_bound(ancient) > ancient);
    assert_eq!(to_db_bound(t), to_db_time(t));
}

#[test]
fn last_entry_wins_in_first_seen_order() {
    let items = [("a", 1), ("b", 2), ("a", 3), ("c", 4)];
    let kept: Vec<_> = last_by_id(&items, |i| i.0).into_iter().copied().collect();
    assert_eq!(kept, [("a", 3), ("b", 2), ("c", 4)]);
}

#[test]
fn remote_servers_default_to_verify_full_and_weaker_modes_are_refused() {
    use super::connect::{PostgresUrl, SslMode};
    let parse = |url: &str| PostgresUrl::parse(url).unwrap();
    // No sslmode: verify-full for a remote server, prefer (as before) on this machine.
    assert_eq!(
        parse("postgres://tapd@db.example.org/tapd").ssl_mode,
        SslMode::VerifyFull
    );
    assert_eq!(
        parse("postgres://tapd@10.0.0.5:5433/tapd").ssl_mode,
        SslMode::VerifyFull
    );
    for local in [
        "postgres://tapd@127.0.0.1/tapd",
        "postgres://tapd@localhost:5432/tapd",
        "postgres://tapd@[::1]/tapd",
        "postgres://tapd@%2Frun%2Fpostgresql/tapd",
    ] {
        let url = parse(local);
        assert_eq!(url.ssl_mode, SslMode::Prefer, "{local}");
        assert!(url.is_local(), "{local}");
        for mode in ["disable", "prefer", "require"] {
            let url = parse(&format!("{local}?sslmode={mode}"));
            assert_eq!(url.transport_problem(false, false), None, "{local} {mode}");
        }
    }
    // A remote server: everything weaker than verify-full is refused, naming the key.
    for (mode, ca, says) in [
        ("disable", false, "in clear"),
        ("prefer", true, "falls back to clear text"),
        ("require", false, "require without store.ca_file"),
        (
            "require",
            true,
            "does not check that the certificate names the server",
        ),
        (
            "verify-ca",
            true,
            "does not check that the certificate names the server",
        ),
    ] {
        let url = parse(&format!(
            "postgres://tapd@db.example.org/tapd?sslmode={mode}"
        ));
        let problem = url.transport_problem(ca, false).unwrap_or_default();
        assert!(problem.contains(says), "{mode}: {problem}");
        assert!(problem.contains(&format!("sslmode={mode}")), "{problem}");
        assert!(
            problem.contains("store.allow_insecure_transport"),
            "{problem}"
        );
        // Accepted when the administrator says so.
        assert_eq!(url.transport_problem(ca, true), None);
    }
    // A mix of a local and a remote host is remote.
    let mixed = parse("postgres://tapd@127.0.0.1,db.example.org/tapd?sslmode=prefer");
    assert!(!mixed.is_local());
    assert!(mixed.transport_problem(false, false).is_some());
    let full = parse("postgres://tapd@db.example.org/tapd?sslmode=verify-full");
    assert_eq!(full.transport_problem(false, false), None);
}
