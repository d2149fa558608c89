//! Passkeys through HTTP with a software authenticator: registration and sign-in work for the
//! site's origin, and answers made for any other origin are refused.

use axum::http::StatusCode;
use serde_json::json;
use tapd::model::MethodKind;

use crate::authenticator::SoftAuthenticator;
use crate::harness::{Browser, Site, PUBLIC_URL};

async fn signed_in_with_tap(site: &Site, user: &str) -> Browser {
    let code = site.create_tap(user, false, None, None).await;
    let mut browser = site.browser();
    let page = browser.sign_in_with_tap(user, &code).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    browser.follow(&page).await;
    browser
}

async fn register(
    browser: &mut Browser,
    key: &mut SoftAuthenticator,
    origin: &str,
) -> crate::harness::Page {
    let start = browser
        .post_json("/security-info/passkeys/start", &json!({}))
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    let start = start.json();
    let credential = key.register(&start["options"], origin);
    browser
        .post_json(
            "/security-info/passkeys/finish",
            &json!({ "ceremony": start["ceremony"], "name": "Test key", "credential": credential }),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webauthn_response_for_another_origin_is_refused() {
    let site = Site::new().await;
    let mut browser = signed_in_with_tap(&site, "alice").await;
    let mut key = SoftAuthenticator::new();

    // A phishing page relaying the ceremony: the browser signs for its own origin.
    for origin in [
        "https://evil.example",
        "http://localhost:8081",
        "http://127.0.0.1:8080",
    ] {
        let refused = register(&mut browser, &mut key, origin).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{origin}: {}",
            refused.body
        );
        assert!(refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("could not be verified"));
    }
    let alice = site.service.store().user("alice").await.unwrap().unwrap();
    assert!(site
        .service
        .store()
        .methods(&alice.id)
        .await
        .unwrap()
        .is_empty());

    // The same authenticator at the right origin registers.
    let done = register(&mut browser, &mut key, PUBLIC_URL).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.json()["redirect"], "/security-info?added=passkey");
    let methods = site.service.store().methods(&alice.id).await.unwrap();
    assert_eq!(methods.len(), 1);
    assert_eq!(methods[0].kind, MethodKind::Fido2);
    assert_eq!(methods[0].display_name, "Test key");
    // The ceremony was used: answering it again is refused.
    let again = register(&mut browser, &mut key, PUBLIC_URL).await;
    assert_eq!(
        again.status,
        StatusCode::FORBIDDEN,
        "already registered: {}",
        again.body
    );

    // Sign in with it (discoverable); an assertion made for another origin is refused.
    let mut visitor = site.browser();
    visitor.get("/").await;
    let start = visitor
        .post_json("/sign-in/passkey/start", &json!({}))
        .await
        .json();
    let assertion = key.assert(&start["options"], "https://evil.example");
    let refused = visitor
        .post_json(
            "/sign-in/passkey/finish",
            &json!({ "ceremony": start["ceremony"], "credential": assertion }),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert!(!visitor.cookies.contains_key("tapd-session"));

    let start = visitor
        .post_json("/sign-in/passkey/start", &json!({}))
        .await
        .json();
    assert!(start["options"]["publicKey"]["allowCredentials"]
        .as_array()
        .is_none_or(|a| a.is_empty()));
    let assertion = key.assert(&start["options"], PUBLIC_URL);
    let ok = visitor
        .post_json(
            "/sign-in/passkey/finish",
            &json!({ "ceremony": start["ceremony"], "credential": assertion.clone() }),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.json()["redirect"], "/security-info");
    let info = visitor.get("/security-info").await;
    assert!(info.body.contains("You signed in with a passkey"));
    // Replaying the same answer on its (used) ceremony is refused.
    let mut replayer = site.browser();
    replayer.get("/").await;
    let replay = replayer
        .post_json(
            "/sign-in/passkey/finish",
            &json!({ "ceremony": start["ceremony"], "credential": assertion }),
        )
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_is_the_second_factor_after_the_password() {
    let site = Site::new().await;
    let mut browser = signed_in_with_tap(&site, "alice").await;
    let mut key = SoftAuthenticator::new();
    assert_eq!(
        register(&mut browser, &mut key, PUBLIC_URL).await.status,
        StatusCode::OK
    );

    let mut later = site.browser();
    later.get("/").await;
    let page = later
        .post(
            "/sign-in/password",
            &[("username", "alice"), ("password", "alice-demo-pw")],
        )
        .await;
    assert_eq!(page.location(), Some("/sign-in/verify"));
    let verify = later.get("/sign-in/verify").await;
    assert!(verify.body.contains("Use a passkey or security key"));
    let start = later
        .post_json("/sign-in/passkey/start", &json!({}))
        .await
        .json();
    let allowed = start["options"]["publicKey"]["allowCredentials"]
        .as_array()
        .unwrap();
    assert_eq!(allowed.len(), 1, "the user's own passkey is asked for");
    let assertion = key.assert(&start["options"], PUBLIC_URL);
    let ok = later
        .post_json(
            "/sign-in/passkey/finish",
            &json!({ "ceremony": start["ceremony"], "credential": assertion }),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let info = later.get("/security-info").await;
    assert!(
        info.body.contains("your password and a second method"),
        "{}",
        info.body
    );
}
