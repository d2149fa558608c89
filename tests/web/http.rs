//! HTTP-level tests of sign-in, TAP rules, CSRF and throttling, through the real router.

use axum::http::StatusCode;
use chrono::Duration;
use tapd::model::{AuditFilter, AuditResult};
use tapd::policy::SignInFailure;

use crate::harness::{unescape, Site, PUBLIC_URL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_with_a_future_start_shows_the_not_yet_valid_message() {
    let site = Site::new().await;
    let start = site.now() + Duration::hours(2);
    let code = site.create_tap("alice", false, Some(start), None).await;
    let mut browser = site.browser();
    let page = browser.sign_in_with_tap("alice@example.org", &code).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let expected = SignInFailure::TapNotYetValid { start }.message(PUBLIC_URL);
    assert_eq!(
        expected,
        "Your Temporary Access Pass is not valid yet. It can be used from 2026-11-27T11:00:00Z."
    );
    assert!(unescape(&page.body).contains(&expected), "{}", page.body);
    assert!(!browser.cookies.contains_key("tapd-session"));

    let events = site
        .service
        .store()
        .audit(&AuditFilter {
            activity: Some("User sign-in".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let last = &events[0].event;
    assert_eq!(last.result, AuditResult::Failure);
    assert_eq!(last.reason_code.as_deref(), Some("tap_not_yet_valid"));
    assert_eq!(
        last.details["authenticationMethod"],
        "Temporary Access Pass"
    );
    assert_eq!(last.target.as_deref(), Some("alice@example.org"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_in_scope_users_holding_a_tap_get_the_tap_prompt() {
    let site = Site::new().await;
    // dave is in tap-excluded: he holds a TAP but is out of scope.
    let dave_code = site.create_tap("dave", false, None, None).await;
    site.create_tap("alice", false, None, None).await;
    let mut browser = site.browser();
    for (name, tap_prompt) in [
        ("dave", false),
        ("dave@example.org", false),
        ("bob", false), // in scope, no TAP
        ("nobody@example.org", false),
        ("alice", true),
        ("ALICE@example.org", true),
    ] {
        let page = browser.identify(name).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(
            page.has_form("/sign-in/tap"),
            tap_prompt,
            "{name}: {}",
            page.body
        );
        assert_eq!(page.has_form("/sign-in/password"), !tap_prompt, "{name}");
        assert_eq!(page.body.contains("Enter password"), !tap_prompt, "{name}");
    }
    // A TAP prompt offers the password too; choosing it gives the password prompt.
    let page = browser.identify("alice").await;
    assert!(page.body.contains("Use your password instead"));
    let page = browser
        .post("/sign-in", &[("username", "alice"), ("prefer", "password")])
        .await;
    assert!(page.has_form("/sign-in/password") && !page.has_form("/sign-in/tap"));

    // Out of scope, dave's TAP does not work even when posted directly, and is not consumed.
    browser.get("/").await;
    let page = browser
        .post(
            "/sign-in/tap",
            &[("username", "dave"), ("code", &dave_code)],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(unescape(&page.body).contains(&SignInFailure::TapOneTimeUsed.message(PUBLIC_URL)));

    // His password works; with no method registered he may register one.
    browser.get("/").await;
    let page = browser
        .post(
            "/sign-in/password",
            &[("username", "dave"), ("password", "dave-demo-pw")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), Some("/security-info"));
    let info = browser.follow(&page).await;
    assert!(info.body.contains("Security info") && info.body.contains("dave@example.org"));

    // Unknown names and wrong passwords read the same.
    let mut other = site.browser();
    other.get("/").await;
    let unknown = other
        .post(
            "/sign-in/password",
            &[("username", "nobody"), ("password", "x")],
        )
        .await;
    let wrong = other
        .post(
            "/sign-in/password",
            &[("username", "bob"), ("password", "x")],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(unknown
        .body
        .contains("Your account or password is incorrect."));
    assert!(wrong
        .body
        .contains("Your account or password is incorrect."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_mode_user_cannot_add_a_security_key() {
    let site = Site::new().await;
    // erin is in engineering (the interrupt group), in scope through tap-users > staff.
    let code = site.create_tap("erin", true, None, None).await;
    let mut browser = site.browser();
    let page = browser.sign_in_with_tap("erin", &code).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), Some("/register"));
    let wizard = browser.follow(&page).await;
    assert!(wizard.body.contains("Keep your account secure"));
    assert!(unescape(&wizard.body).contains(tapd::web::security_info::INTERRUPT_REFUSAL));
    assert!(!wizard.body.contains("data-webauthn=\"register\""));
    // The Security info page sends interrupt-mode users back to the wizard.
    assert_eq!(
        browser.get("/security-info").await.location(),
        Some("/register")
    );

    let refused = browser
        .post_json("/security-info/passkeys/start", &serde_json::json!({}))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.json()["error"],
        tapd::web::security_info::INTERRUPT_REFUSAL
    );

    // An authenticator app is what the wizard offers, and it works.
    let enrolment = browser.post("/security-info/authenticator-app", &[]).await;
    assert_eq!(enrolment.status, StatusCode::OK, "{}", enrolment.body);
    let code = current_code(&enrolment.body, site.now());
    let ceremony = field(&enrolment.body, "ceremony");
    let done = browser
        .post(
            "/security-info/authenticator-app/confirm",
            &[("ceremony", &ceremony), ("code", &code)],
        )
        .await;
    assert_eq!(done.location(), Some("/register"), "{}", done.body);
    let wizard = browser.follow(&done).await;
    assert!(wizard.body.contains("Your authenticator app is registered"));
}

/// The value of the hidden input `name` on a page.
pub fn field(body: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        + marker.len();
    let end = body[start..].find('"').unwrap();
    body[start..start + end].to_owned()
}

/// The authenticator-app code for the secret shown on an enrolment page, at `now`.
pub fn current_code(body: &str, now: tapd::model::Timestamp) -> String {
    let marker = r#"<code id="totp-secret">"#;
    let start = body.find(marker).unwrap() + marker.len();
    let end = body[start..].find('<').unwrap();
    let secret = tapd::web::totp::base32_decode(&body[start..start + end]).unwrap();
    tapd::web::totp::code_at_step(&secret, tapd::web::totp::step_at(now))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_sign_ins_with_one_one_time_tap_yield_exactly_one_session() {
    let site = Site::new().await;
    let code = site.create_tap("alice", true, None, None).await;
    let mut browsers = Vec::new();
    for i in 0..20u16 {
        let mut browser = site.browser();
        browser.peer.set_port(41000 + i);
        let prompt = browser.identify("alice").await;
        assert!(prompt.has_form("/sign-in/tap"));
        browsers.push(browser);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for mut browser in browsers {
        let code = code.clone();
        tasks.spawn(async move {
            let page = browser
                .post("/sign-in/tap", &[("username", "alice"), ("code", &code)])
                .await;
            (page, browser.cookies.contains_key("tapd-session"))
        });
    }
    let (mut sessions, mut blocked) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (page, has_session) = joined.unwrap();
        match page.status {
            StatusCode::SEE_OTHER => {
                assert!(has_session);
                sessions += 1;
            }
            StatusCode::UNAUTHORIZED => {
                assert!(!has_session);
                assert!(unescape(&page.body)
                    .contains(&SignInFailure::TapOneTimeUsed.message(PUBLIC_URL)));
                blocked += 1;
            }
            other => panic!("unexpected {other}: {}", page.body),
        }
    }
    assert_eq!((sessions, blocked), (1, 19));
    let successes = site
        .service
        .store()
        .audit(&AuditFilter {
            activity: Some("User sign-in".into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.result == AuditResult::Success)
        .count();
    assert_eq!(successes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_their_csrf_token_or_from_another_origin_are_refused() {
    let site = Site::new().await;
    let code = site.create_tap("alice", false, None, None).await;

    // Sign-in form without a token: refused, no session, TAP untouched.
    let mut browser = site.browser();
    browser.get("/").await;
    let page = browser
        .post_raw("/sign-in/tap", &[("username", "alice"), ("code", &code)])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("nothing was changed"));
    assert!(!browser.cookies.contains_key("tapd-session"));
    // A token that is not the cookie's: refused too.
    let page = browser
        .post_raw(
            "/sign-in/tap",
            &[
                ("csrf", &"A".repeat(43)),
                ("username", "alice"),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    let page = browser.sign_in_with_tap("alice", &code).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    browser.follow(&page).await;
    // Signed in: a form without the session's token is refused and changes nothing.
    let page = browser
        .post_raw("/security-info/authenticator-app", &[])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = browser
        .post_raw("/security-info/temporary-access-pass/delete", &[])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let alice = site.service.store().user("alice").await.unwrap().unwrap();
    assert!(site
        .service
        .store()
        .tap_for_user(&alice.id)
        .await
        .unwrap()
        .is_some());
    // The pre-sign-in cookie's token is not the session's token.
    let pre = browser.cookies.get("tapd-csrf").cloned().unwrap();
    let page = browser
        .post_raw("/security-info/authenticator-app", &[("csrf", &pre)])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // Script requests need the header.
    let mut no_header = browser.clone();
    no_header.csrf = None;
    let page = no_header
        .post_json("/security-info/passkeys/start", &serde_json::json!({}))
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    // The right token from another origin: refused.
    let mut evil = browser.clone();
    evil.origin = Some("https://evil.example".to_owned());
    let page = evil.post("/security-info/authenticator-app", &[]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("another site"));

    // And with everything right it works.
    let page = browser.post("/security-info/authenticator-app", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Add an authenticator app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eleventh_wrong_code_in_a_row_is_throttled() {
    let site = Site::new().await;
    let code = site.create_tap("alice", false, None, Some(480)).await;
    let mut browser = site.browser();
    browser.identify("alice").await;
    for attempt in 1..=10 {
        let page = browser
            .post(
                "/sign-in/tap",
                &[("username", "alice"), ("code", "WRONG-CODE")],
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}: {}",
            page.body
        );
        assert!(page
            .body
            .contains("An access pass could not be found or verified for the user."));
        // A patient guesser waits out every growing delay.
        site.clock.advance(Duration::seconds(10));
    }
    // The 11th attempt is refused before any check, even with the right code.
    let page = browser
        .post(
            "/sign-in/tap",
            &[("username", "alice@example.org"), ("code", &code)],
        )
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    assert!(page
        .body
        .contains("Too many failed sign-in attempts. Try again in 50 seconds."));
    assert_eq!(page.headers["retry-after"], "50");
    assert!(!browser.cookies.contains_key("tapd-session"));
    // Another connection (port) of the same address is throttled for the same account.
    // (Another address is not: the lockout is per (account, source), see tests/web/abuse.rs.)
    let mut elsewhere = site.browser();
    elsewhere.peer = "127.0.0.1:40001".parse().unwrap();
    elsewhere.identify("alice").await;
    let page = elsewhere
        .post("/sign-in/tap", &[("username", "alice"), ("code", &code)])
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);

    let throttled = site
        .service
        .store()
        .audit(&AuditFilter {
            activity: Some("User sign-in".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(throttled[0].event.reason_code.as_deref(), Some("throttled"));
    assert_eq!(
        throttled
            .iter()
            .filter(|e| e.event.reason_code.as_deref() == Some("tap_not_found"))
            .count(),
        10
    );

    // After the lockout the right code works.
    site.clock.advance(Duration::seconds(60));
    let page = browser
        .post("/sign-in/tap", &[("username", "alice"), ("code", &code)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_password_a_user_with_methods_must_present_one_and_codes_work_once() {
    let site = Site::new().await;
    let tap = site.create_tap("alice", false, None, None).await;
    let mut browser = site.browser();
    let page = browser.sign_in_with_tap("alice", &tap).await;
    browser.follow(&page).await;
    let enrolment = browser.post("/security-info/authenticator-app", &[]).await;
    // A wrong first code does not save the app and shows the same secret again.
    let ceremony = crate::http::field(&enrolment.body, "ceremony");
    let retry = browser
        .post(
            "/security-info/authenticator-app/confirm",
            &[("ceremony", &ceremony), ("code", "000000")],
        )
        .await;
    assert_eq!(retry.status, StatusCode::BAD_REQUEST);
    assert!(
        retry.body.contains("That code didn&#39;t work")
            || retry.body.contains("That code didn't work")
    );
    let alice = site.service.store().user("alice").await.unwrap().unwrap();
    assert!(site
        .service
        .store()
        .methods(&alice.id)
        .await
        .unwrap()
        .is_empty());
    let code = current_code(&retry.body, site.now());
    let ceremony = crate::http::field(&retry.body, "ceremony");
    let done = browser
        .post(
            "/security-info/authenticator-app/confirm",
            &[
                ("ceremony", &ceremony),
                ("code", &code),
                ("name", "Phone <b>"),
            ],
        )
        .await;
    assert_eq!(done.location(), Some("/security-info?added=app"));
    let info = browser.follow(&done).await;
    assert!(info.body.contains("Your authenticator app was added."));
    assert!(info.body.contains("Phone &lt;b&gt;"));
    let secret_page = retry.body.clone();
    browser.post("/sign-out", &[]).await;

    // Password sign-in now needs the app.
    site.clock.advance(Duration::seconds(30));
    browser.get("/").await;
    let page = browser
        .post(
            "/sign-in/password",
            &[("username", "alice"), ("password", "alice-demo-pw")],
        )
        .await;
    assert_eq!(page.location(), Some("/sign-in/verify"), "{}", page.body);
    assert_eq!(
        browser.get("/security-info").await.location(),
        Some("/sign-in/verify")
    );
    let refused = browser
        .post_json("/security-info/passkeys/start", &serde_json::json!({}))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let verify = browser.get("/sign-in/verify").await;
    assert!(verify.body.contains("Verify your identity"));
    let wrong = browser
        .post("/sign-in/verify/code", &[("code", "123456")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let code = current_code(&secret_page, site.now());
    let ok = browser
        .post("/sign-in/verify/code", &[("code", &code)])
        .await;
    assert_eq!(ok.location(), Some("/security-info"), "{}", ok.body);
    browser.follow(&ok).await;
    browser.post("/sign-out", &[]).await;

    // The same code (same time step) is not accepted a second time.
    browser.get("/").await;
    browser
        .post(
            "/sign-in/password",
            &[("username", "alice"), ("password", "alice-demo-pw")],
        )
        .await;
    browser.get("/sign-in/verify").await;
    let replay = browser
        .post("/sign-in/verify/code", &[("code", &code)])
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_ones_own_tap_ends_the_session_it_began() {
    let site = Site::new().await;
    let tap = site.create_tap("alice", false, None, None).await;
    let mut browser = site.browser();
    let page = browser.sign_in_with_tap("alice", &tap).await;
    let info = browser.follow(&page).await;
    assert!(info.body.contains("Usable now"));
    let page = browser
        .post("/security-info/temporary-access-pass/delete", &[])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("you have been signed out"));
    assert!(!browser.cookies.contains_key("tapd-session"));
    let alice = site.service.store().user("alice").await.unwrap().unwrap();
    assert!(site
        .service
        .store()
        .tap_for_user(&alice.id)
        .await
        .unwrap()
        .is_none());
    let events = site
        .service
        .store()
        .audit(&AuditFilter {
            activity: Some("User deleted security info".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
}

/// The `source_address` of the newest "User sign-in" audit event.
async fn last_sign_in_source(site: &Site) -> String {
    let events = site
        .service
        .store()
        .audit(&AuditFilter {
            activity: Some("User sign-in".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    events[0].event.source_address.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    // No trusted proxies (and the same with a proxy list that does not hold the peer).
    for trusted in [&[][..], &["10.0.0.0/8"][..]] {
        let site = Site::with_trusted_proxies(trusted).await;
        let code = site.create_tap("alice", false, None, Some(480)).await;
        let mut attacker = site.browser();
        attacker.identify("alice").await;
        for attempt in 1..=10 {
            // A new forged client address each time, as a lockout-reset attempt would.
            attacker.forwarded_for = Some(format!("203.0.113.{attempt}"));
            let page = attacker
                .post(
                    "/sign-in/tap",
                    &[("username", "alice"), ("code", "WRONG-CODE")],
                )
                .await;
            assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
            assert_eq!(last_sign_in_source(&site).await, "127.0.0.1:40000");
            site.clock.advance(Duration::seconds(10));
        }
        // Still locked: rotating the header did not make a new source.
        attacker.forwarded_for = Some("198.51.100.200".to_owned());
        let page = attacker
            .post("/sign-in/tap", &[("username", "alice"), ("code", &code)])
            .await;
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
        assert_eq!(last_sign_in_source(&site).await, "127.0.0.1:40000");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_from_a_trusted_proxy_names_the_client() {
    let site = Site::with_trusted_proxies(&["127.0.0.0/8"]).await;
    site.create_tap("alice", false, None, Some(480)).await;
    let mut browser = site.browser();
    // A client-supplied entry, then the address the proxy appended: the latter counts.
    browser.forwarded_for = Some("1.2.3.4, 203.0.113.50".to_owned());
    browser.identify("alice").await;
    let page = browser
        .post(
            "/sign-in/tap",
            &[("username", "alice"), ("code", "WRONG-CODE")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert_eq!(
        last_sign_in_source(&site).await,
        "203.0.113.50 (via 127.0.0.1:40000)"
    );
    // Malformed: the socket peer.
    browser.forwarded_for = Some("203.0.113.50, not-an-ip".to_owned());
    browser
        .post(
            "/sign-in/tap",
            &[("username", "alice"), ("code", "WRONG-CODE")],
        )
        .await;
    assert_eq!(last_sign_in_source(&site).await, "127.0.0.1:40000");
}
