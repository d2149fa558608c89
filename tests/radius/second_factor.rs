//! The authenticator app as a second factor over RADIUS, end to end with real components: the
//! kit's slapd holding the demo directory, the real `tapd`, its web page over HTTP (TAP
//! sign-in, authenticator-app registration; the test computes codes from the shown secret
//! with RFC 6238), then FreeRADIUS's `radclient`: challenge mode, append mode, replays, wrong
//! and expired States, a State bound to its station, the TAP refused as password and as
//! answer (and still usable on the web afterwards), users without an app, retransmissions of
//! both legs, and a State that outlives a configuration reload.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Request;

use crate::harness::{
    metric, radclient, Options, RadclientResult, Tapd, PUBLIC_URL, RADIUS_SECRET,
};
use crate::support::http::{form_encode, http, Answer, CookieJar};
use crate::support::slapd::Slapd;

const CHALLENGE_TEXT: &str = "Enter the code from your authenticator app";

/// A cookie-keeping form client of the daemon's web listener.
struct Web {
    addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
    cookies: CookieJar,
    csrf: Option<String>,
}

impl Web {
    fn new(addr: SocketAddr) -> Web {
        Web {
            addr,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            cookies: CookieJar::default(),
            csrf: None,
        }
    }

    fn send(&mut self, builder: hyper::http::request::Builder, body: String) -> Answer {
        let mut builder = builder.header("host", PUBLIC_URL.trim_start_matches("http://"));
        if let Some(cookie) = self.cookies.header() {
            builder = builder.header("cookie", cookie);
        }
        let request = builder.body(Full::new(Bytes::from(body))).unwrap();
        let answer = self.runtime.block_on(http(self.addr, request));
        self.cookies.store(&answer.headers);
        let csrf = after(&answer.body, r#"name="csrf-token" content=""#)
            .or_else(|| after(&answer.body, r#"name="csrf" value=""#));
        if let Some(csrf) = csrf.filter(|c| !c.is_empty()) {
            self.csrf = Some(csrf);
        }
        answer
    }

    fn get(&mut self, path: &str) -> Answer {
        self.send(Request::get(path), String::new())
    }

    fn post(&mut self, path: &str, pairs: &[(&str, &str)]) -> Answer {
        let csrf = self.csrf.clone().expect("a page with a CSRF token first");
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(pairs);
        self.send(
            Request::post(path).header("content-type", "application/x-www-form-urlencoded"),
            form_encode(&all),
        )
    }

    fn follow(&mut self, answer: &Answer) -> Answer {
        let location = answer
            .headers
            .get("location")
            .unwrap_or_else(|| panic!("not a redirect: {} {}", answer.status, answer.body))
            .to_str()
            .unwrap()
            .to_owned();
        self.get(&location)
    }

    /// Signs in with a TAP; returns the page it lands on.
    fn sign_in_with_tap(&mut self, user: &str, tap: &str) -> Answer {
        let start = self.get("/");
        assert_eq!(start.status, 200, "{}", start.body);
        let prompt = self.post("/sign-in", &[("username", user)]);
        assert!(
            prompt.body.contains(r#"action="/sign-in/tap""#),
            "{}",
            prompt.body
        );
        let signed_in = self.post("/sign-in/tap", &[("username", user), ("code", tap)]);
        assert_eq!(signed_in.status, 303, "{}", signed_in.body);
        self.follow(&signed_in)
    }

    /// Registers an authenticator app (signed in); returns its secret.
    fn register_app(&mut self) -> Vec<u8> {
        let enrolment = self.post("/security-info/authenticator-app", &[]);
        assert_eq!(enrolment.status, 200, "{}", enrolment.body);
        let marker = r#"<code id="totp-secret">"#;
        let start = enrolment
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no secret shown: {}", enrolment.body))
            + marker.len();
        let end = enrolment.body[start..].find('<').unwrap();
        let secret = tapd::web::totp::base32_decode(&enrolment.body[start..start + end]).unwrap();
        let ceremony = after(&enrolment.body, r#"name="ceremony" value=""#).unwrap();
        let code = code_at(&secret, 0);
        let done = self.post(
            "/security-info/authenticator-app/confirm",
            &[("ceremony", &ceremony), ("code", &code)],
        );
        assert_eq!(done.status, 303, "{}", done.body);
        secret
    }
}

fn after(body: &str, marker: &str) -> Option<String> {
    let start = body.find(marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_owned())
}

/// The RFC 6238 code of `secret` for the current step plus `offset` steps.
fn code_at(secret: &[u8], offset: i64) -> String {
    let step = tapd::web::totp::step_at(chrono::Utc::now());
    tapd::web::totp::code_at_step(secret, step + offset)
}

fn quoted(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// An Access-Request with User-Name, User-Password, Calling-Station-Id, optionally State, and
/// Message-Authenticator (radclient computes it).
fn request(user: &str, password: &str, station: &str, state: Option<&str>) -> String {
    let state = state.map_or(String::new(), |s| format!(", State = {s}"));
    format!(
        "User-Name = \"{user}\", User-Password = \"{}\", Calling-Station-Id = \"{station}\"{state}, Message-Authenticator = 0x00\n",
        quoted(password)
    )
}

fn send(
    tapd: &Tapd,
    user: &str,
    password: &str,
    station: &str,
    state: Option<&str>,
) -> RadclientResult {
    radclient(
        tapd.radius,
        "auth",
        RADIUS_SECRET,
        &request(user, password, station, state),
    )
}

#[track_caller]
fn expect(result: &RadclientResult, reply: &str) {
    assert_eq!(result.reply.as_deref(), Some(reply), "{}", result.output);
}

/// Expects an Access-Reject, audited for `upn` with `reason` as the last RADIUS sign-in.
#[track_caller]
fn expect_rejected(tapd: &Tapd, result: &RadclientResult, upn: &str, reason: &str) {
    expect(result, "Access-Reject");
    assert_eq!(legs(tapd, upn).last().unwrap().1, reason, "{upn}");
}

/// Sends the password and expects an Access-Challenge; returns its State (`0x…`).
#[track_caller]
fn challenge(tapd: &Tapd, user: &str, password: &str, station: &str) -> String {
    let challenge = send(tapd, user, password, station, None);
    expect(&challenge, "Access-Challenge");
    assert_eq!(
        challenge.reply_message().as_deref(),
        Some(CHALLENGE_TEXT),
        "{}",
        challenge.output
    );
    assert!(
        challenge.attribute("Message-Authenticator").is_some(),
        "{}",
        challenge.output
    );
    let state = challenge.attribute("State").expect("a State");
    assert!(state.starts_with("0x") && state.len() == 2 + 32, "{state}");
    state
}

/// The user's RADIUS sign-in events, oldest first: result, reason code, method.
fn legs(tapd: &Tapd, upn: &str) -> Vec<(String, String, String)> {
    let mut events: Vec<_> = tapd
        .sign_ins(upn)
        .iter()
        .filter(|e| e["channel"] == "radius")
        .map(|e| {
            (
                e["result"].as_str().unwrap_or("-").to_owned(),
                e["reasonCode"].as_str().unwrap_or("-").to_owned(),
                e.pointer("/authenticationDetails/0/authenticationMethod")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("-")
                    .to_owned(),
            )
        })
        .collect();
    events.reverse();
    events
}

fn challenge_options(ldap_url: &str, lifetime: &str) -> Options {
    Options {
        ldap_url: Some(ldap_url.to_owned()),
        client: "second_factor = \"totp\"\nwithout_second_factor = \"reject\"\nsecond_factor_mode = \"challenge\"".into(),
        radius: format!("challenge_lifetime = \"{lifetime}\""),
        ..Options::default()
    }
}

/// The demo directory as slapadd takes it (without comments and the `version` line).
fn demo_directory() -> String {
    let demo = std::fs::read_to_string(crate::harness::demo_ldif()).unwrap();
    let kept: Vec<&str> = demo
        .lines()
        .filter(|line| !line.starts_with('#') && !line.starts_with("version:"))
        .collect();
    kept.join("\n").trim_start().to_owned() + "\n"
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn password_then_authenticator_code_over_radius_with_a_tap_refused_throughout() {
    let slapd = Slapd::start(&demo_directory());
    let mut tapd = Tapd::start_with(challenge_options(&slapd.url(), "120s"));
    tapd.enable_policy();
    let bob_tap = tapd.create_tap("bob", &[]);
    let erin_tap = tapd.create_tap("erin", &[]);

    // Onboarding on the web: a TAP sign-in, then an authenticator app.
    let mut web = Web::new(tapd.web);
    web.sign_in_with_tap("bob@example.org", &bob_tap);
    let bob_secret = web.register_app();
    let mut web = Web::new(tapd.web);
    web.sign_in_with_tap("erin@example.org", &erin_tap);
    let erin_secret = web.register_app();

    // A State answered from another station (Calling-Station-Id), or for another user, with
    // a fresh code: refused.
    let state = challenge(&tapd, "bob", "bob-demo-pw", "02-00-00-00-00-b4");
    let elsewhere = send(
        &tapd,
        "bob",
        &code_at(&bob_secret, 1),
        "02-00-00-00-00-66",
        Some(&state),
    );
    expect_rejected(&tapd, &elsewhere, "bob@example.org", "state_unknown");
    let state = challenge(&tapd, "bob", "bob-demo-pw", "02-00-00-00-00-b4");
    let other_user = send(
        &tapd,
        "erin",
        &code_at(&erin_secret, 1),
        "02-00-00-00-00-b4",
        Some(&state),
    );
    expect_rejected(&tapd, &other_user, "erin@example.org", "state_unknown");

    // Password → Access-Challenge (State, Reply-Message, Message-Authenticator) → code →
    // Access-Accept. The registration used the current step; the next one is fresh.
    let state = challenge(&tapd, "bob", "bob-demo-pw", "02-00-00-00-00-b1");
    let code = code_at(&bob_secret, 1);
    let accepted = send(&tapd, "bob", &code, "02-00-00-00-00-b1", Some(&state));
    expect(&accepted, "Access-Accept");
    assert!(
        accepted.output.contains("Filter-Id = \"eng-acl\""),
        "{}",
        accepted.output
    );
    let events = legs(&tapd, "bob@example.org");
    assert_eq!(
        events[events.len() - 2..],
        [
            ("success".into(), "-".into(), "Password".into()),
            (
                "success".into(),
                "-".into(),
                "Authenticator app (TOTP)".into()
            ),
        ]
    );

    // The same code again, after a new password leg: refused as a replay.
    let state = challenge(&tapd, "bob", "bob-demo-pw", "02-00-00-00-00-b2");
    let replay = send(&tapd, "bob", &code, "02-00-00-00-00-b2", Some(&state));
    expect_rejected(&tapd, &replay, "bob@example.org", "totp_replayed");
    // The State was used up by that answer.
    let again = send(
        &tapd,
        "bob",
        &code_at(&bob_secret, 1),
        "02-00-00-00-00-b2",
        Some(&state),
    );
    expect_rejected(&tapd, &again, "bob@example.org", "state_unknown");

    // A State tapd never issued.
    challenge(&tapd, "bob", "bob-demo-pw", "02-00-00-00-00-b3");
    let forged = format!("0x{}", hex(b"not-a-real-state"));
    let wrong = send(
        &tapd,
        "bob",
        &code_at(&bob_secret, 1),
        "02-00-00-00-00-b3",
        Some(&forged),
    );
    expect_rejected(&tapd, &wrong, "bob@example.org", "state_unknown");

    // The TAP as the password, and as the answer: the documented reject, not consumed.
    let tap_message = format!(
        "A Temporary Access Pass can't be used with RADIUS (NPS extension). Use it for web sign-in at {PUBLIC_URL}."
    );
    let as_password = send(&tapd, "bob", &bob_tap, "02-00-00-00-00-b5", None);
    expect(&as_password, "Access-Reject");
    assert_eq!(as_password.reply_message(), Some(tap_message.clone()));
    let state = challenge(&tapd, "bob", "bob-demo-pw", "02-00-00-00-00-b6");
    let as_answer = send(&tapd, "bob", &bob_tap, "02-00-00-00-00-b6", Some(&state));
    expect(&as_answer, "Access-Reject");
    assert_eq!(as_answer.reply_message(), Some(tap_message));
    let events = legs(&tapd, "bob@example.org");
    assert_eq!(
        events.last().unwrap(),
        &(
            "failure".into(),
            "tap_not_supported_radius".into(),
            "Temporary Access Pass".into()
        )
    );
    assert_eq!(tapd.tap_of("bob")["isUsable"], true);

    // A user without an authenticator app, `without_second_factor = "reject"`.
    let reader = send(&tapd, "reader", "reader-demo-pw", "02-00-00-00-00-c1", None);
    expect(&reader, "Access-Reject");
    assert!(
        reader
            .reply_message()
            .is_some_and(|m| m.contains("authenticator app") && m.contains(PUBLIC_URL)),
        "{}",
        reader.output
    );
    assert_eq!(
        legs(&tapd, "reader@example.org").last().unwrap().1,
        "second_factor_missing"
    );

    // A State outlives a reload, which can shorten the lifetime of new ones: the old State is
    // still known (a wrong code gets totp_invalid, not state_unknown) …
    let kept = challenge(&tapd, "erin", "erin-demo-pw", "02-00-00-00-00-e1");
    tapd.reconfigure(&challenge_options(&slapd.url(), "1s"));
    let wrong_code = send(&tapd, "erin", "000000", "02-00-00-00-00-e1", Some(&kept));
    expect_rejected(&tapd, &wrong_code, "erin@example.org", "totp_invalid");
    // … and a State answered after its lifetime is refused as expired.
    let late = challenge(&tapd, "erin", "erin-demo-pw", "02-00-00-00-00-e2");
    std::thread::sleep(Duration::from_millis(1500));
    let expired = send(
        &tapd,
        "erin",
        &code_at(&erin_secret, 1),
        "02-00-00-00-00-e2",
        Some(&late),
    );
    expect_rejected(&tapd, &expired, "erin@example.org", "state_expired");

    let scraped = tapd.scrape();
    let series = |result: &str| format!(r#"tapd_radius_challenges_total{{result="{result}"}}"#);
    assert_eq!(metric(&scraped, &series("issued")), 8.0, "{scraped}");
    assert_eq!(metric(&scraped, &series("accepted")), 1.0, "{scraped}");
    assert_eq!(metric(&scraped, &series("rejected")), 8.0, "{scraped}");

    // Append mode, and `without_second_factor = "accept"`.
    tapd.reconfigure(&Options {
        ldap_url: Some(slapd.url()),
        client: "second_factor = \"totp\"\nwithout_second_factor = \"accept\"\nsecond_factor_mode = \"append\"".into(),
        ..Options::default()
    });
    let alone = send(&tapd, "erin", "erin-demo-pw", "02-00-00-00-00-e3", None);
    expect_rejected(&tapd, &alone, "erin@example.org", "second_factor_missing");
    let appended = send(
        &tapd,
        "erin",
        &format!("erin-demo-pw,{}", code_at(&erin_secret, 1)),
        "02-00-00-00-00-e3",
        None,
    );
    expect(&appended, "Access-Accept");
    assert_eq!(
        legs(&tapd, "erin@example.org")[..].last().unwrap(),
        &(
            "success".into(),
            "-".into(),
            "Authenticator app (TOTP)".into()
        )
    );
    let reader = send(&tapd, "reader", "reader-demo-pw", "02-00-00-00-00-c1", None);
    expect(&reader, "Access-Accept");
    let tap_appended = send(&tapd, "bob", &bob_tap, "02-00-00-00-00-b7", None);
    expect_rejected(
        &tapd,
        &tap_appended,
        "bob@example.org",
        "tap_not_supported_radius",
    );

    // After all that, the TAP still signs bob in on the web.
    let mut web = Web::new(tapd.web);
    let landed = web.sign_in_with_tap("bob@example.org", &bob_tap);
    assert_eq!(landed.status, 200, "{}", landed.body);
    assert_eq!(tapd.tap_of("bob")["isUsable"], true);
}

/// Both legs are ordinary requests for the reply cache: a retransmitted password leg gets the
/// same Access-Challenge (the same State, no second one issued), a retransmitted answer the
/// same Access-Accept (not a replay rejection). And a State is bound to the client that got
/// it: the answer from another configured client (127.0.0.2, same secret) is refused.
#[test]
fn retransmissions_of_both_legs_get_their_cached_replies_and_a_state_is_bound_to_its_client() {
    let slapd = Slapd::start(&demo_directory());
    let mut options = challenge_options(&slapd.url(), "120s");
    options.extra = "[[radius.clients]]\nname = \"other-nas\"\naddress = \"127.0.0.2\"\nsecret_file = \"radius.secret\"\nsecond_factor = \"totp\"\n".into();
    let tapd = Tapd::start_with(options);
    tapd.enable_policy();
    let tap = tapd.create_tap("bob", &[]);
    let mut web = Web::new(tapd.web);
    web.sign_in_with_tap("bob@example.org", &tap);
    let secret = web.register_app();

    let connect = |local: &str| {
        let socket = UdpSocket::bind(local).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket.connect(tapd.radius).unwrap();
        socket
    };
    let socket = connect("127.0.0.1:0");
    let exchange = |socket: &UdpSocket, packet: &[u8], times: usize| {
        let mut replies = Vec::new();
        for _ in 0..times {
            socket.send(packet).unwrap();
            let mut buffer = [0u8; 4096];
            let len = socket.recv(&mut buffer).expect("a reply");
            replies.push(buffer[..len].to_vec());
        }
        assert!(
            replies.windows(2).all(|w| w[0] == w[1]),
            "a retransmission gets the same reply"
        );
        replies.remove(0)
    };
    let state_of = |challenge: &[u8]| {
        assert_eq!(challenge[0], 11, "Access-Challenge");
        assert_eq!(&challenge[20..22], &[80, 18], "Message-Authenticator first");
        let state = attribute_value(challenge, 24).expect("State");
        let mut attribute = vec![24, u8::try_from(state.len() + 2).unwrap()];
        attribute.extend_from_slice(&state);
        attribute
    };

    // The State test-nas got, answered by other-nas with a fresh code: refused.
    let first = crate::access_request(1, *b"first-leg-bob-00", "bob", "bob-demo-pw");
    let state = state_of(&exchange(&socket, &first, 1));
    let foreign = crate::access_request_with(
        2,
        *b"foreign-answer-0",
        "bob",
        &code_at(&secret, 1),
        &[state],
    );
    let refused = exchange(&connect("127.0.0.2:0"), &foreign, 1);
    assert_eq!(refused[0], 3, "Access-Reject");
    let events = tapd.sign_ins("bob@example.org");
    assert_eq!(events[0]["reasonCode"], "state_unknown", "{events:#?}");
    assert_eq!(events[0]["appDisplayName"], "RADIUS client other-nas");

    // Retransmissions of both legs.
    let first = crate::access_request(3, *b"first-leg-bob-01", "bob", "bob-demo-pw");
    let state = state_of(&exchange(&socket, &first, 2));
    let answer = crate::access_request_with(
        4,
        *b"second-leg-bob-1",
        "bob",
        &code_at(&secret, 1),
        &[state],
    );
    let accept = exchange(&socket, &answer, 2);
    assert_eq!(accept[0], 2, "Access-Accept");
    let scraped = tapd.scrape();
    assert_eq!(
        metric(&scraped, "tapd_radius_retransmissions_replayed_total"),
        2.0
    );
    assert_eq!(
        metric(&scraped, r#"tapd_radius_challenges_total{result="issued"}"#),
        2.0
    );
}

fn attribute_value(packet: &[u8], kind: u8) -> Option<Vec<u8>> {
    let mut offset = 20;
    while offset + 2 <= packet.len() {
        let (t, len) = (packet[offset], usize::from(packet[offset + 1]));
        if t == kind {
            return Some(packet[offset + 2..offset + len].to_vec());
        }
        offset += len.max(2);
    }
    None
}
