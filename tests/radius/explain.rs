//! `tapctl tap explain` and `GET …/temporaryAccessPassMethods/explain` against the real daemon:
//! each row of Entra's "my TAP doesn't work" list gets its exact cause and evidence, and the
//! JSON document is pinned by a golden file. The same daemon serves the web page, RADIUS and
//! the federation adapter, so a web sign-in with a used one-time TAP, a RADIUS TAP attempt and
//! a federation TAP attempt show up with their distinct reason codes, in the explanation's
//! last attempts and in the audit (`GET /v1/auditLogs`, `tapctl audit`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::{
    curl, metric, radclient, require_tool, Options, Tapd, FEDERATION_TOKEN, RADIUS_SECRET,
};
use crate::pap_attributes;
use crate::support::http::form_encode;

/// nina is in `explain-users` (included) and in `contractors-emea`, which is nested in
/// `contractors`, which is nested in `tap-blocked` (excluded): two levels of nesting. olga is
/// included and holds no TAP.
const LDIF: &str = "\
dn: uid=nina,ou=people,dc=example,dc=org
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: inetOrgPerson
entryUUID: 7c1e5a10-0001-4b6e-9a11-0000000e0001
uid: nina
cn: Nina Nested
sn: Nested
mail: nina@example.org

dn: uid=olga,ou=people,dc=example,dc=org
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: inetOrgPerson
entryUUID: 7c1e5a10-0001-4b6e-9a11-0000000e0002
uid: olga
cn: Olga Nopass
sn: Nopass
mail: olga@example.org

dn: cn=explain-users,ou=groups,dc=example,dc=org
objectClass: top
objectClass: groupOfNames
entryUUID: 7c1e5a10-0002-4b6e-9a11-0000000e0001
cn: explain-users
member: uid=nina,ou=people,dc=example,dc=org
member: uid=olga,ou=people,dc=example,dc=org

dn: cn=contractors-emea,ou=groups,dc=example,dc=org
objectClass: top
objectClass: groupOfNames
entryUUID: 7c1e5a10-0002-4b6e-9a11-0000000e0002
cn: contractors-emea
member: uid=nina,ou=people,dc=example,dc=org

dn: cn=contractors,ou=groups,dc=example,dc=org
objectClass: top
objectClass: groupOfNames
entryUUID: 7c1e5a10-0002-4b6e-9a11-0000000e0003
cn: contractors
member: cn=contractors-emea,ou=groups,dc=example,dc=org

dn: cn=tap-blocked,ou=groups,dc=example,dc=org
objectClass: top
objectClass: groupOfNames
entryUUID: 7c1e5a10-0002-4b6e-9a11-0000000e0004
cn: tap-blocked
member: cn=contractors,ou=groups,dc=example,dc=org
";

fn start() -> Tapd {
    let tapd = Tapd::start_with(Options {
        ldif: LDIF.to_owned(),
        ..Options::default()
    });
    tapd.tapctl(&[
        "policy",
        "set",
        "--state",
        "enabled",
        "--include-groups",
        "tap-users,explain-users",
        "--exclude-groups",
        "tap-blocked",
    ]);
    tapd
}

fn explain(tapd: &Tapd, user: &str) -> Value {
    tapd.tapctl(&["tap", "explain", user])
}

/// `tapctl tap explain USER` as people read it, in the zone `tz`.
fn explain_text(tapd: &Tapd, user: &str, tz: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tapctl"))
        .arg("--socket")
        .arg(tapd.socket())
        .args(["tap", "explain", user])
        .env("TZ", tz)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tapctl tap explain {user}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn checks(v: &Value) -> Vec<(String, String)> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_owned(),
                c["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The check that failed (the walk stops there).
fn failed_check(v: &Value) -> String {
    let failed: Vec<String> = checks(v)
        .into_iter()
        .filter(|(_, r)| r == "fail")
        .map(|(c, _)| c)
        .collect();
    assert_eq!(failed.len(), 1, "exactly one failed check: {v:#}");
    failed[0].clone()
}

/// Signs in on the web page with `code` (curl with a cookie jar: the page's CSRF cookie and
/// form token); returns the HTTP status of the TAP step.
fn web_tap_sign_in(web: SocketAddr, dir: &Path, user: &str, code: &str) -> u16 {
    require_tool("curl", "curl");
    let jar = dir.join(format!("cookies-{user}"));
    let _ = std::fs::remove_file(&jar);
    let page = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--noproxy",
            "*",
        ])
        .arg("--cookie-jar")
        .arg(&jar)
        .arg(format!("http://{web}/"))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&page.stdout);
    let marker = r#"name="csrf" value=""#;
    let start = body
        .find(marker)
        .unwrap_or_else(|| panic!("no CSRF field: {body}"))
        + marker.len();
    let csrf = &body[start..start + body[start..].find('"').unwrap()];
    let data = form_encode(&[("csrf", csrf), ("username", user), ("code", code)]);
    let answer = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--noproxy",
            "*",
        ])
        .arg("--cookie")
        .arg(&jar)
        .args(["--output", "/dev/null", "--write-out", "%{http_code}"])
        .args([
            "--header",
            "Content-Type: application/x-www-form-urlencoded",
        ])
        .args(["--data-binary", &data])
        .arg(format!("http://{web}/sign-in/tap"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&answer.stdout)
        .trim()
        .parse()
        .unwrap()
}

/// Moves a TAP's start and creation back by `hours` in the daemon's SQLite store (the clock
/// of a real daemon can't be turned; an expired TAP is one whose window lies in the past).
fn age_tap(tapd: &Tapd, tap_id: &str, hours: i64) {
    let db = tapd.dir().join("state/tapd.db");
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let shift = hours * 3_600_000_000;
    let changed = conn
        .execute(
            "UPDATE taps SET start = start - ?1, created = created - ?1 WHERE id = ?2",
            rusqlite::params![shift, tap_id],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// Replaces what changes from run to run (times, ids, ports) with placeholders, so the
/// golden file pins the document's shape and every stable value.
fn normalise(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("id", Value::String(s)) if s.len() == 36 => Value::String("<uuid>".into()),
                        (_, v) => normalise(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalise).collect()),
        Value::String(s) => Value::String(normalise_text(s)),
        other => other.clone(),
    }
}

fn normalise_text(s: &str) -> String {
    // RFC 3339 UTC times (`2026-12-06T05:30:00.123456Z`) and loopback ports.
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("20") {
        let candidate = &rest[i..];
        let end = candidate.find('Z').filter(|&z| z <= 32);
        match end {
            Some(z)
                if candidate.len() > 19
                    && candidate[..z + 1]
                        .parse::<chrono::DateTime<chrono::Utc>>()
                        .is_ok() =>
            {
                out.push_str(&rest[..i]);
                out.push_str("<time>");
                rest = &candidate[z + 1..];
            }
            _ => {
                out.push_str(&rest[..i + 2]);
                rest = &candidate[2..];
            }
        }
    }
    out.push_str(rest);
    let mut text = out;
    while let Some(i) = text.find("127.0.0.1:") {
        let after = i + "127.0.0.1:".len();
        let digits = text[after..]
            .chars()
            .take_while(char::is_ascii_digit)
            .count();
        if digits == 0 {
            break;
        }
        text.replace_range(i..after + digits, "127.0.0.1#<port>");
    }
    text.replace("127.0.0.1#<port>", "127.0.0.1:<port>")
}

fn golden(name: &str, actual: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/radius/golden")
        .join(name);
    let text = format!("{:#}\n", normalise(actual));
    if std::env::var_os("TAPD_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (TAPD_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        text,
        expected,
        "the explain document changed; if on purpose, rerun with TAPD_UPDATE_GOLDEN=1 and \
         review the diff of {}",
        path.display()
    );
}

#[test]
fn explain_names_each_cause_with_its_evidence() {
    let tapd = start();

    // Out of scope through a two-level nested exclude group.
    // Her TAP is not valid yet either: the walk names the earlier cause, the exclusion.
    tapd.tapctl(&["tap", "create", "nina", "--start", "+1h"]);
    let nina = explain(&tapd, "nina");
    assert_eq!(nina["cause"]["code"], "excluded", "{nina:#}");
    assert_eq!(nina["cause"]["reasonCode"], "tap_out_of_scope");
    assert_eq!(failed_check(&nina), "not_excluded");
    let path = serde_json::json!(["nina", "contractors-emea", "contractors", "tap-blocked"]);
    assert_eq!(nina["cause"]["path"], path);
    assert_eq!(nina["evidence"]["excludeTargets"][0]["path"], path);
    assert_eq!(
        nina["evidence"]["includeTargets"][0]["path"],
        serde_json::json!(["nina", "explain-users"])
    );
    assert_eq!(
        nina["cause"]["message"],
        "nina is excluded from the TAP policy by tap-blocked \
         (nina → contractors-emea → contractors → tap-blocked)."
    );
    let text = explain_text(&tapd, "nina", "UTC");
    assert!(
        text.contains("nina → contractors-emea → contractors → tap-blocked")
            && text.contains("reason code tap_out_of_scope"),
        "{text}"
    );

    // Not yet valid: the start, and the end, in the reader's zone.
    let created = tapd.tapctl(&["tap", "create", "bob", "--start", "+2h", "--lifetime", "1h"]);
    let bob = explain(&tapd, "bob");
    assert_eq!(bob["cause"]["code"], "not_yet_valid", "{bob:#}");
    assert_eq!(bob["cause"]["reasonCode"], "tap_not_yet_valid");
    assert_eq!(failed_check(&bob), "started");
    let start: chrono::DateTime<chrono::Utc> =
        created["startDateTime"].as_str().unwrap().parse().unwrap();
    let end = start + chrono::Duration::hours(1);
    let tap = &bob["evidence"]["temporaryAccessPass"];
    assert_eq!(tap["startDateTime"], created["startDateTime"]);
    assert_eq!(
        tap["endDateTime"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        end
    );
    // tapctl renders local time: the same instants at UTC+05:30.
    let kolkata = chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
    let text = explain_text(&tapd, "bob", "IST-5:30");
    let local = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&kolkata)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    };
    assert!(
        text.contains(&format!("it can be used from {}", local(start)))
            && text.contains(&local(end)),
        "{text}"
    );
    // `tap show` gains the end time.
    let shown = tapd.tap_of("bob");
    assert_eq!(shown["endDateTime"], tap["endDateTime"]);

    // Expired.
    let created = tapd.tapctl(&["tap", "create", "alice", "--lifetime", "1h", "--one-time"]);
    age_tap(&tapd, created["id"].as_str().unwrap(), 2);
    let alice = explain(&tapd, "alice");
    assert_eq!(alice["cause"]["code"], "expired", "{alice:#}");
    assert_eq!(alice["cause"]["reasonCode"], "tap_expired");
    assert_eq!(failed_check(&alice), "not_expired");

    // Disabled account (carol is in tap-users, her directory account is locked).
    let carol = explain(&tapd, "carol");
    assert_eq!(carol["cause"]["code"], "account_disabled", "{carol:#}");
    assert_eq!(carol["cause"]["reasonCode"], "tap_out_of_scope");
    assert_eq!(carol["evidence"]["accountEnabled"], false);
    assert_eq!(
        carol["cause"]["message"],
        "The directory account of carol is disabled."
    );

    // No TAP.
    let olga = explain(&tapd, "olga");
    assert_eq!(olga["cause"]["code"], "no_tap", "{olga:#}");
    assert_eq!(olga["cause"]["reasonCode"], "tap_not_found");
    assert_eq!(olga["evidence"]["temporaryAccessPass"], Value::Null);

    // Multi-use against a one-time policy; erin is included through two nested groups.
    tapd.tapctl(&["tap", "create", "erin", "--multi-use"]);
    assert_eq!(explain(&tapd, "erin")["cause"]["code"], "usable");
    tapd.tapctl(&["policy", "set", "--one-time", "true"]);
    let erin = explain(&tapd, "erin");
    assert_eq!(erin["cause"]["code"], "multi_use_forbidden", "{erin:#}");
    assert_eq!(erin["cause"]["reasonCode"], "tap_multi_use_forbidden");
    assert_eq!(erin["evidence"]["policy"]["isUsableOnce"], true);
    assert_eq!(
        erin["evidence"]["temporaryAccessPass"]["isUsableOnce"],
        false
    );
    assert_eq!(
        erin["evidence"]["includeTargets"][0]["path"],
        serde_json::json!(["erin", "engineering", "staff", "tap-users"])
    );
    let text = explain_text(&tapd, "erin", "UTC");
    assert!(
        text.contains("multi-use (the policy now requires one-time)")
            && text.contains("erin → engineering → staff → tap-users"),
        "{text}"
    );
}

/// A used one-time TAP, then the same TAP on the web, over RADIUS and at the federation
/// adapter: three distinct reason codes, in the explanation and in the audit.
#[test]
fn one_time_used_on_the_web_and_tap_attempts_on_every_channel() {
    let tapd = start();
    let code = tapd.create_one_time_tap("alice");
    tapd.tapctl(&[
        "policy",
        "set",
        "--include-groups",
        "tap-users,explain-users",
        "--exclude-groups",
        "tap-blocked",
    ]);
    assert_eq!(web_tap_sign_in(tapd.web, tapd.dir(), "alice", &code), 303);
    assert_eq!(web_tap_sign_in(tapd.web, tapd.dir(), "alice", &code), 401);
    let radius = radclient(
        tapd.radius,
        "auth",
        RADIUS_SECRET,
        &pap_attributes("alice", &code),
    );
    assert_eq!(
        radius.reply.as_deref(),
        Some("Access-Reject"),
        "{}",
        radius.output
    );
    let federation = curl(
        tapd.web,
        "POST",
        "/federation/v1/authenticate",
        Some(FEDERATION_TOKEN),
        Some(&format!(
            r#"{{"userPrincipalName":"alice@example.org","credential":"{code}"}}"#
        )),
    );
    assert_eq!(federation.status, 403, "{federation:?}");

    // Metrics count the refusal under its own reason.
    let scraped = tapd.scrape();
    for (series, want) in [
        (
            r#"tapd_tap_rejections_total{channel="web",reason="tap_one_time_used"}"#,
            1.0,
        ),
        (
            r#"tapd_tap_rejections_total{channel="web",reason="tap_out_of_scope"}"#,
            0.0,
        ),
        (
            r#"tapd_tap_rejections_total{channel="web",reason="tap_multi_use_forbidden"}"#,
            0.0,
        ),
        (
            r#"tapd_tap_rejections_total{channel="radius",reason="tap_not_supported_radius"}"#,
            1.0,
        ),
        (
            r#"tapd_tap_rejections_total{channel="federation",reason="tap_not_supported_federation"}"#,
            1.0,
        ),
    ] {
        assert_eq!(metric(&scraped, series), want, "{series}\n{scraped}");
    }

    let alice = explain(&tapd, "alice");
    assert_eq!(alice["cause"]["code"], "one_time_used", "{alice:#}");
    assert_eq!(alice["cause"]["reasonCode"], "tap_one_time_used");
    assert_eq!(failed_check(&alice), "not_used");
    assert_eq!(alice["cause"]["channel"], "web");
    let address = alice["cause"]["sourceAddress"].as_str().unwrap();
    assert!(address.starts_with("127.0.0.1"), "{alice:#}");
    let tap = &alice["evidence"]["temporaryAccessPass"];
    assert_eq!(tap["usedOn"]["channel"], "web");
    assert_eq!(tap["usedOn"]["sourceAddress"], address);
    assert_eq!(alice["cause"]["usedDateTime"], tap["usedDateTime"]);
    let last = &alice["evidence"]["lastAttempts"];
    assert_eq!(last["web"]["reasonCode"], "tap_one_time_used", "{last:#}");
    assert_eq!(last["radius"]["reasonCode"], "tap_not_supported_radius");
    assert_eq!(
        last["federation"]["reasonCode"],
        "tap_not_supported_federation"
    );
    for channel in ["web", "radius", "federation"] {
        assert_eq!(last[channel]["result"], "failure");
        assert_eq!(
            last[channel]["authenticationMethod"],
            "Temporary Access Pass"
        );
    }
    // Nobody sees a code: not the explanation, not its text form.
    assert!(!alice.to_string().contains(&code));
    let text = explain_text(&tapd, "alice", "UTC");
    assert!(!text.contains(&code));
    assert!(
        text.contains("The one-time TAP was already used at")
            && text.contains(&format!("on the web channel from {address}")),
        "{text}"
    );
    golden("explain-one-time-used.json", &alice);

    // The audit, as the admin API serves it (curl on the socket) and as tapctl prints it:
    // Graph `signIn` fields, one distinct reason code per refusal.
    require_tool("curl", "curl");
    let raw = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--unix-socket",
        ])
        .arg(tapd.socket())
        .arg("http://localhost/v1/auditLogs?user=alice%40example.org&activity=User%20sign-in")
        .output()
        .unwrap();
    let api: Value = serde_json::from_slice(&raw.stdout).unwrap();
    let via_tapctl = tapd.tapctl(&[
        "audit",
        "--user",
        "alice@example.org",
        "--activity",
        "User sign-in",
    ]);
    for listing in [&api, &via_tapctl] {
        let events = listing["value"].as_array().unwrap();
        let expected = [
            (
                "federation",
                "tap_not_supported_federation",
                130506,
                "relying party test-idp",
                "Federation",
            ),
            (
                "radius",
                "tap_not_supported_radius",
                130506,
                "RADIUS client test-nas",
                "RADIUS",
            ),
            (
                "web",
                "tap_one_time_used",
                130501,
                "tapd web registration",
                "Browser",
            ),
        ];
        assert_eq!(
            events.len(),
            4,
            "three refusals and the sign-in: {listing:#}"
        );
        for (event, (channel, reason, error_code, app, client)) in events.iter().zip(expected) {
            assert_eq!(event["@odata.type"], "#microsoft.graph.signIn", "{event:#}");
            assert_eq!(event["channel"], channel);
            assert_eq!(event["reasonCode"], reason);
            assert_eq!(event["userPrincipalName"], "alice@example.org");
            assert_eq!(event["appDisplayName"], app);
            assert_eq!(event["clientAppUsed"], client);
            assert_eq!(event["ipAddress"], "127.0.0.1");
            assert_eq!(event["status"]["errorCode"], error_code);
            assert_eq!(event["status"]["additionalDetails"], reason);
            assert!(event["status"]["failureReason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()));
            let step = &event["authenticationDetails"][0];
            assert_eq!(step["authenticationMethod"], "Temporary Access Pass");
            assert_eq!(step["succeeded"], false);
        }
        let success = &events[3];
        assert_eq!(success["status"]["errorCode"], 0, "{success:#}");
        assert_eq!(success["authenticationDetails"][0]["succeeded"], true);
    }
    let table = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_tapctl"))
            .arg("--socket")
            .arg(tapd.socket())
            .args(["audit", "--user", "alice@example.org"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for row in [
        ("relying party test-idp", "tap_not_supported_federation"),
        ("RADIUS client test-nas", "tap_not_supported_radius"),
        ("tapd web registration", "tap_one_time_used"),
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.contains(row.0) && l.contains(row.1) && l.contains("User sign-in")),
            "{row:?} not in\n{table}"
        );
    }

    // The TAP's creation: Entra's activity, status reason, category and service, the TAP
    // detail in additionalDetails; the activity filter finds it by Entra's name.
    let created = tapd.tapctl(&["audit", "--activity", "Admin registered security info"]);
    let created = &created["value"][0];
    assert_eq!(
        created["@odata.type"], "#microsoft.graph.directoryAudit",
        "{created:#}"
    );
    assert_eq!(
        created["activityDisplayName"],
        "Admin registered security info"
    );
    assert_eq!(
        created["resultReason"],
        "Admin registered temporary access pass method for user"
    );
    assert_eq!(created["category"], "UserManagement");
    assert_eq!(created["loggedByService"], "Authentication Methods");
    assert_eq!(created["result"], "success");
    assert_eq!(created["initiatedBy"]["app"]["displayName"], "root (uid 0)");
    assert_eq!(
        created["targetResources"][0]["userPrincipalName"],
        "alice@example.org"
    );
    assert_eq!(created["targetResources"][0]["type"], "User");
    let detail = |key: &str| crate::support::audit::detail(created, key).map(str::to_owned);
    assert_eq!(
        detail("TemporaryAccessPass.Id").as_deref(),
        alice["evidence"]["temporaryAccessPass"]["id"].as_str()
    );
    assert_eq!(
        detail("TemporaryAccessPass.AccessPassUsage").as_deref(),
        Some("Once")
    );
    assert!(detail("TemporaryAccessPass.EndDateTime").is_some());
    assert!(!created.to_string().contains(&code));
}
