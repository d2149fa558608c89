//! The RADIUS and federation paths of the real `tapd`, driven by real clients: FreeRADIUS's
//! `radclient`, `curl`, and a small UDP client for exact retransmissions; what `/metrics`
//! says about them (`metrics`); SIGHUP reloads of secrets and tokens (`reload`). Every daemon runs
//! on loopback ports chosen by the OS; nothing is sent anywhere else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_flush;
mod explain;
mod harness;
mod load;
/// The load generator's engine, shared with `examples/radius_load` (see `load`).
#[allow(dead_code)]
#[path = "../../examples/radius_load/load.rs"]
mod load_engine;
mod metrics;
mod reload;
mod second_factor;
mod slow_clients;
#[path = "../support/mod.rs"]
mod support;
mod timing;

use std::net::UdpSocket;
use std::time::Duration;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};

use harness::{curl, metric, radclient, Tapd, FEDERATION_TOKEN, PUBLIC_URL, RADIUS_SECRET};

fn tap_radius_message() -> String {
    format!(
        "A Temporary Access Pass can't be used with RADIUS (NPS extension). Use it for web sign-in at {PUBLIC_URL}."
    )
}

/// `User-Name`/`User-Password` attribute lines for radclient, with a Message-Authenticator
/// (radclient fills in the real value when one is listed).
fn pap_attributes(user: &str, password: &str) -> String {
    format!(
        "User-Name = \"{user}\", User-Password = \"{password}\", Message-Authenticator = 0x00\n"
    )
}

#[test]
fn radius_accepts_the_password_and_rejects_a_tap_without_consuming_it() {
    let tapd = Tapd::start();
    let code = tapd.create_one_time_tap("alice");

    let accept = radclient(
        tapd.radius,
        "auth",
        RADIUS_SECRET,
        &pap_attributes("alice", "alice-demo-pw"),
    );
    assert_eq!(
        accept.reply.as_deref(),
        Some("Access-Accept"),
        "{}",
        accept.output
    );

    let tap = radclient(
        tapd.radius,
        "auth",
        RADIUS_SECRET,
        &pap_attributes("alice", &code),
    );
    assert_eq!(
        tap.reply.as_deref(),
        Some("Access-Reject"),
        "{}",
        tap.output
    );
    assert_eq!(
        tap.reply_message(),
        Some(tap_radius_message()),
        "{}",
        tap.output
    );
    let shown = tapd.tap_of("alice");
    assert_eq!(shown["isUsable"], true, "{shown}");
    assert_eq!(shown["methodUsabilityReason"], "EnabledByPolicy", "{shown}");

    let wrong = radclient(
        tapd.radius,
        "auth",
        RADIUS_SECRET,
        &pap_attributes("alice", "not-the-password"),
    );
    assert_eq!(
        wrong.reply.as_deref(),
        Some("Access-Reject"),
        "{}",
        wrong.output
    );
    assert_eq!(wrong.reply_message(), None, "{}", wrong.output);

    // Group-mapped reply attributes: bob is in engineering (alice is not).
    let bob = radclient(
        tapd.radius,
        "auth",
        RADIUS_SECRET,
        &pap_attributes("bob@example.org", "bob-demo-pw"),
    );
    assert_eq!(
        bob.reply.as_deref(),
        Some("Access-Accept"),
        "{}",
        bob.output
    );
    assert!(
        bob.output.contains("Filter-Id = \"eng-acl\""),
        "{}",
        bob.output
    );
    assert!(!accept.output.contains("Filter-Id"), "{}", accept.output);

    let events = tapd.sign_ins("alice@example.org");
    let reasons: Vec<&str> = events
        .iter()
        .map(|e| e["reasonCode"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        reasons,
        ["invalid_credentials", "tap_not_supported_radius", "-"]
    );
    assert_eq!(events[1]["channel"], "radius");
    assert_eq!(
        support::audit::initiator(&events[1]),
        Some("RADIUS client test-nas")
    );
    assert!(events[1]["sourceAddress"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
}

#[test]
fn radius_drops_requests_without_a_valid_message_authenticator() {
    let tapd = Tapd::start();
    let wrong_secret = radclient(
        tapd.radius,
        "auth",
        "not-the-shared-secret",
        &pap_attributes("alice", "alice-demo-pw"),
    );
    assert_eq!(wrong_secret.reply, None, "{}", wrong_secret.output);
    assert!(
        wrong_secret.output.contains("No reply"),
        "{}",
        wrong_secret.output
    );

    let without_ma = radclient(
        tapd.radius,
        "auth",
        RADIUS_SECRET,
        "User-Name = \"alice\", User-Password = \"alice-demo-pw\"\n",
    );
    assert_eq!(without_ma.reply, None, "{}", without_ma.output);
    assert!(tapd.sign_ins("alice@example.org").is_empty());
    // Dropped for the right reasons, and said so in the log.
    let log = tapd.log().join("\n");
    assert!(log.contains("[bad_message_authenticator]"), "{log}");
    assert!(log.contains("[missing_message_authenticator]"), "{log}");
    // And counted, by cause.
    let metrics = tapd.scrape();
    for cause in ["bad_message_authenticator", "missing_message_authenticator"] {
        let series = format!(r#"tapd_radius_dropped_total{{cause="{cause}"}}"#);
        assert_eq!(metric(&metrics, &series), 1.0, "{metrics}");
    }
}

#[test]
fn radius_answers_status_server_and_refuses_chap() {
    let tapd = Tapd::start();
    let status = radclient(
        tapd.radius,
        "status",
        RADIUS_SECRET,
        "Message-Authenticator = 0x00\n",
    );
    assert_eq!(
        status.reply.as_deref(),
        Some("Access-Accept"),
        "{}",
        status.output
    );

    let chap = radclient(
        tapd.radius,
        "auth",
        RADIUS_SECRET,
        "User-Name = \"alice\", CHAP-Password = \"alice-demo-pw\", Message-Authenticator = 0x00\n",
    );
    assert_eq!(
        chap.reply.as_deref(),
        Some("Access-Reject"),
        "{}",
        chap.output
    );
    assert_eq!(
        chap.reply_message().as_deref(),
        Some(tapd::radius::PAP_ONLY_MESSAGE),
        "{}",
        chap.output
    );
    let events = tapd.sign_ins("alice@example.org");
    assert_eq!(events[0]["reasonCode"], "unsupported_method");
    assert_eq!(
        events[0]["authenticationDetails"][0]["authenticationMethod"],
        "chap"
    );
}

// ---- a minimal RADIUS client, to send one exact datagram twice ----

fn attribute(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind, u8::try_from(value.len() + 2).unwrap()];
    out.extend_from_slice(value);
    out
}

/// An Access-Request for `user`/`password` with Message-Authenticator, as RFC 2865 and
/// RFC 3579 build it.
pub(crate) fn access_request(
    identifier: u8,
    authenticator: [u8; 16],
    user: &str,
    password: &str,
) -> Vec<u8> {
    access_request_with(identifier, authenticator, user, password, &[])
}

/// [`access_request`] with `extra` attributes (already encoded) before the
/// Message-Authenticator.
pub(crate) fn access_request_with(
    identifier: u8,
    authenticator: [u8; 16],
    user: &str,
    password: &str,
    extra: &[Vec<u8>],
) -> Vec<u8> {
    let secret = RADIUS_SECRET.as_bytes();
    let mut padded = password.as_bytes().to_vec();
    padded.resize(padded.len().div_ceil(16).max(1) * 16, 0);
    let mut hidden = Vec::new();
    let mut previous = authenticator.to_vec();
    for block in padded.chunks(16) {
        let pad = Md5::new()
            .chain_update(secret)
            .chain_update(&previous)
            .finalize();
        let cipher: Vec<u8> = block.iter().zip(pad.iter()).map(|(p, b)| p ^ b).collect();
        hidden.extend_from_slice(&cipher);
        previous = cipher;
    }
    let mut packet = vec![1, identifier, 0, 0];
    packet.extend_from_slice(&authenticator);
    packet.extend(attribute(1, user.as_bytes()));
    packet.extend(attribute(2, &hidden));
    for attribute in extra {
        packet.extend_from_slice(attribute);
    }
    let ma_offset = packet.len() + 2;
    packet.extend(attribute(80, &[0; 16]));
    let length = u16::try_from(packet.len()).unwrap();
    packet[2..4].copy_from_slice(&length.to_be_bytes());
    let mut mac = Hmac::<Md5>::new_from_slice(secret).unwrap();
    mac.update(&packet);
    let ma: [u8; 16] = mac.finalize().into_bytes().into();
    packet[ma_offset..ma_offset + 16].copy_from_slice(&ma);
    packet
}

#[test]
fn radius_answers_a_retransmission_from_the_cache_without_a_second_check() {
    let tapd = Tapd::start();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.connect(tapd.radius).unwrap();
    let request = access_request(42, *b"retransmission!!", "bob", "bob-demo-pw");
    let mut replies = Vec::new();
    for _ in 0..2 {
        socket.send(&request).unwrap();
        let mut buffer = [0u8; 4096];
        let len = socket.recv(&mut buffer).expect("a reply");
        replies.push(buffer[..len].to_vec());
    }
    assert_eq!(replies[0][0], 2, "Access-Accept");
    assert_eq!(
        replies[0], replies[1],
        "the retransmission gets the identical reply"
    );
    // Message-Authenticator is the first attribute and the Response Authenticator verifies.
    assert_eq!(&replies[0][20..22], &[80, 18]);
    let mut signed = replies[0].clone();
    signed[4..20].copy_from_slice(&request[4..20]);
    let expected: [u8; 16] = Md5::new()
        .chain_update(&signed)
        .chain_update(RADIUS_SECRET.as_bytes())
        .finalize()
        .into();
    assert_eq!(&replies[0][4..20], &expected);
    // One decision, one password check: the audit holds a single sign-in.
    let events = tapd.sign_ins("bob@example.org");
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["result"], "success");
    let metrics = tapd.scrape();
    let replayed = metric(&metrics, "tapd_radius_retransmissions_replayed_total");
    assert_eq!(replayed, 1.0);
    let accepted = r#"tapd_radius_requests_total{result="accept",reason="password"}"#;
    assert_eq!(metric(&metrics, accepted), 1.0);
}

#[test]
fn a_zero_length_proxy_state_gets_no_reply_and_is_counted_as_malformed() {
    let tapd = Tapd::start();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    socket.connect(tapd.radius).unwrap();
    // Correctly signed (valid Message-Authenticator), correct password, but a Proxy-State
    // of zero length: the reply could not echo it.
    let empty = vec![33, 2];
    let request = access_request_with(7, *b"empty-proxystate", "bob", "bob-demo-pw", &[empty]);
    socket.send(&request).unwrap();
    let mut buffer = [0u8; 4096];
    assert!(socket.recv(&mut buffer).is_err(), "no reply expected");
    let metrics = tapd.scrape();
    let dropped = r#"tapd_radius_dropped_total{cause="empty_proxy_state"}"#;
    assert_eq!(metric(&metrics, dropped), 1.0, "{metrics}");
    assert!(tapd.sign_ins("bob@example.org").is_empty());
    // The same request with a one-octet Proxy-State is answered, the state echoed.
    let request = access_request_with(
        8,
        *b"short-proxystate",
        "bob",
        "bob-demo-pw",
        &[vec![33, 3, 0x5a]],
    );
    socket.send(&request).unwrap();
    let len = socket.recv(&mut buffer).expect("a reply");
    assert_eq!(buffer[0], 2);
    assert!(buffer[..len].windows(3).any(|w| w == [33, 3, 0x5a]));
}

#[test]
fn federation_outcomes_over_http() {
    let tapd = Tapd::start();
    let code = tapd.create_one_time_tap("alice");
    let path = "/federation/v1/authenticate";
    let body = |credential: &str| {
        format!(r#"{{"userPrincipalName":"alice@example.org","credential":"{credential}"}}"#)
    };

    let accepted = curl(
        tapd.web,
        "POST",
        path,
        Some(FEDERATION_TOKEN),
        Some(&body("alice-demo-pw")),
    );
    assert_eq!(accepted.status, 200, "{:?}", accepted);
    assert_eq!(accepted.json["result"], "accepted");
    assert_eq!(accepted.json["userPrincipalName"], "alice@example.org");
    assert!(accepted.json["userId"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    assert!(accepted.json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["displayName"] == "tap-users"));

    let tap = curl(
        tapd.web,
        "POST",
        path,
        Some(FEDERATION_TOKEN),
        Some(&body(&code)),
    );
    assert_eq!(tap.status, 403, "{:?}", tap);
    assert_eq!(tap.json["reasonCode"], "tap_not_supported_federation");
    assert_eq!(tap.json["error"]["code"], "tap_not_supported_federation");
    assert_eq!(
        tap.json["error"]["message"],
        format!("A Temporary Access Pass can't be used with the federation (AD FS) adapter. Use it for web sign-in at {PUBLIC_URL}.")
    );
    assert_eq!(tapd.tap_of("alice")["isUsable"], true);

    let wrong = curl(
        tapd.web,
        "POST",
        path,
        Some(FEDERATION_TOKEN),
        Some(&body("nope")),
    );
    assert_eq!(wrong.status, 401, "{:?}", wrong);
    assert_eq!(wrong.json["reasonCode"], "invalid_credentials");

    for token in [Some("not-the-token-at-all"), None] {
        let refused = curl(tapd.web, "POST", path, token, Some(&body("alice-demo-pw")));
        assert_eq!(refused.status, 401, "{:?}", refused);
        let challenge = refused.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"tapd-federation\""),
            "{refused:?}"
        );
    }

    for malformed in [
        "{not json",
        r#"{"userPrincipalName":"alice@example.org"}"#,
        r#"{"userPrincipalName":"alice@example.org","credential":"x","surprise":true}"#,
    ] {
        let bad = curl(
            tapd.web,
            "POST",
            path,
            Some(FEDERATION_TOKEN),
            Some(malformed),
        );
        assert_eq!(bad.status, 400, "{malformed}: {bad:?}");
        assert_eq!(bad.json["error"]["code"], "bad_request");
    }

    let metadata = curl(tapd.web, "GET", "/federation/v1/metadata", None, None);
    assert_eq!(metadata.status, 200);
    assert_eq!(
        metadata.json["supportedMethods"],
        serde_json::json!(["password"])
    );
    assert_eq!(metadata.json["temporaryAccessPassSupported"], false);

    let events = tapd.sign_ins("alice@example.org");
    let reasons: Vec<&str> = events
        .iter()
        .map(|e| e["reasonCode"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        reasons,
        ["invalid_credentials", "tap_not_supported_federation", "-"]
    );
    assert!(events.iter().all(|e| e["channel"] == "federation"));
    assert_eq!(
        support::audit::initiator(&events[0]),
        Some("relying party test-idp")
    );
}

/// PAP attributes with a Calling-Station-Id.
fn pap_from_station(user: &str, password: &str, station: &str) -> String {
    format!(
        "User-Name = \"{user}\", User-Password = \"{password}\", Calling-Station-Id = \"{station}\", Message-Authenticator = 0x00\n"
    )
}

#[test]
fn erins_password_from_her_own_station_works_while_another_station_is_locked_out() {
    let tapd = Tapd::start();
    let send = |password: &str, station: &str| {
        radclient(
            tapd.radius,
            "auth",
            RADIUS_SECRET,
            &pap_from_station("erin", password, station),
        )
    };
    // Eight different wrong passwords from the attacker's station (five lock it).
    for attempt in 0..8 {
        let wrong = send(&format!("guess-{attempt}"), "02-00-00-00-00-66");
        assert_eq!(
            wrong.reply.as_deref(),
            Some("Access-Reject"),
            "{}",
            wrong.output
        );
    }
    // From there, even erin's correct password is refused without a directory check.
    let locked = send("erin-demo-pw", "02-00-00-00-00-66");
    assert_eq!(
        locked.reply.as_deref(),
        Some("Access-Reject"),
        "{}",
        locked.output
    );
    let reasons: Vec<String> = tapd
        .sign_ins("erin@example.org")
        .iter()
        .map(|e| e["reasonCode"].as_str().unwrap_or("-").to_owned())
        .collect();
    assert_eq!(reasons[0], "throttled", "{reasons:?}");
    // From erin's own station: accepted.
    let own = send("erin-demo-pw", "02-00-00-00-00-e1");
    assert_eq!(
        own.reply.as_deref(),
        Some("Access-Accept"),
        "{}",
        own.output
    );
    // Throttled attempts from the locked station: at most one audit event a minute.
    for _ in 0..5 {
        send("erin-demo-pw", "02-00-00-00-00-66");
    }
    let throttled = tapd
        .sign_ins("erin@example.org")
        .iter()
        .filter(|e| e["reasonCode"] == "throttled")
        .count();
    assert_eq!(throttled, 1);
}

#[test]
fn names_with_control_characters_or_over_256_bytes_are_refused_unaudited() {
    let tapd = Tapd::start();
    let audit_size = || {
        tapd.tapctl(&["audit", "--activity", "User sign-in"])["value"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let before = audit_size();
    for name in ["erin\\n", "erin\\033[2J", "er\\177in"] {
        let refused = radclient(
            tapd.radius,
            "auth",
            RADIUS_SECRET,
            &pap_attributes(name, "erin-demo-pw"),
        );
        assert_eq!(
            refused.reply.as_deref(),
            Some("Access-Reject"),
            "{name}: {}",
            refused.output
        );
    }
    let scraped = tapd.scrape();
    assert_eq!(
        metric(
            &scraped,
            r#"tapd_radius_requests_total{result="reject",reason="name_invalid"}"#
        ),
        3.0
    );
    // Federation: the usual 401, for a control character and for 300 bytes.
    let long = format!("{}@example.org", "e".repeat(300));
    for upn in ["erin\u{1b}[2J@example.org", long.as_str()] {
        let body = serde_json::json!({ "userPrincipalName": upn, "credential": "erin-demo-pw" });
        let refused = curl(
            tapd.web,
            "POST",
            "/federation/v1/authenticate",
            Some(FEDERATION_TOKEN),
            Some(&body.to_string()),
        );
        assert_eq!(refused.status, 401, "{:?}", refused.json);
    }
    assert_eq!(audit_size(), before, "nothing audited");
}
