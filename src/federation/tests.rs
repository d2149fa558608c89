#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Body;
use axum::http::Request as HttpRequest;
use tower::ServiceExt;

use super::*;
use crate::clock::{Clock, SystemClock};
use crate::config::Secret;
use crate::directory::fake::FakeDirectory;
use crate::directory::DirectorySource;
use crate::signin::SignInSettings;
use crate::store::sqlite::SqliteStore;
use crate::store::SyncPlan;
use crate::tapcode::Hasher;

const TOKEN: &str = "federation-test-token-0123456789";

async fn app() -> Router {
    app_with_metrics().await.0
}

/// The router and the registry it counts into.
async fn app_with_metrics() -> (Router, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let directory = Arc::new(FakeDirectory::demo());
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let contents = directory.read_all().await.unwrap();
    let plan = SyncPlan {
        upsert_users: contents.users,
        upsert_groups: contents.groups,
        ..SyncPlan::default()
    };
    crate::store::apply_sync_leased(&*store, &plan)
        .await
        .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let signin = SignIn::new(
        store,
        directory,
        Hasher::new(1, 8).unwrap(),
        clock,
        metrics.clone(),
        SignInSettings {
            public_url: "https://tap.example.org".into(),
            ..SignInSettings::default()
        },
    )
    .unwrap();
    let parties = [RelyingParty {
        name: "adfs".into(),
        token: Secret::new(TOKEN),
    }];
    let state = FederationState::new(Arc::new(signin), &parties, metrics.clone());
    (router(Arc::new(state)).fallback(not_found), metrics)
}

async fn call(app: &Router, token: Option<&str>, body: &str) -> (StatusCode, HeaderMap, Value) {
    let mut request =
        HttpRequest::post(AUTHENTICATE_PATH).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn tokens_are_required_and_challenged() {
    let (app, metrics) = app_with_metrics().await;
    let body = r#"{"userPrincipalName":"alice@example.org","credential":"alice-demo-pw"}"#;
    let (status, headers, json) = call(&app, None, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], BEARER_CHALLENGE);
    assert_eq!(json["error"]["code"], "invalid_token");
    let (status, headers, _) = call(&app, Some("not-the-token"), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with(BEARER_CHALLENGE));
    let (status, _, json) = call(&app, Some(TOKEN), body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["result"], "accepted");
    assert_eq!(json["userPrincipalName"], "alice@example.org");
    assert!(json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["displayName"] == "tap-users"));
    let invalid_token = FederationOutcome::Refused(FederationRefusal::InvalidToken);
    assert_eq!(
        metrics
            .group::<FederationMetrics>()
            .requests
            .get(invalid_token),
        2
    );
    assert_eq!(
        metrics
            .group::<FederationMetrics>()
            .requests
            .get(FederationOutcome::Accept),
        1
    );
}

#[tokio::test]
async fn bodies_are_checked_strictly() {
    let (app, metrics) = app_with_metrics().await;
    for body in [
        "",
        "not json",
        r#"{"userPrincipalName":"alice@example.org"}"#,
        r#"{"userPrincipalName":"alice@example.org","credential":"x","extra":1}"#,
        r#"{"userPrincipalName":"  ","credential":"x"}"#,
    ] {
        let (status, _, json) = call(&app, Some(TOKEN), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        assert_eq!(json["error"]["code"], "bad_request");
    }
    let (status, _, json) = call(
        &app,
        Some(TOKEN),
        r#"{"userPrincipalName":"alice@example.org","credential":"x","method":"sms"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["error"]["code"], "unsupported_method");
    let big = format!(
        r#"{{"userPrincipalName":"alice@example.org","credential":"{}"}}"#,
        "x".repeat(MAX_BODY_BYTES)
    );
    let (status, _, _) = call(&app, Some(TOKEN), &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let count = |outcome| metrics.group::<FederationMetrics>().requests.get(outcome);
    let refused = FederationOutcome::Refused;
    assert_eq!(count(refused(FederationRefusal::BadRequest)), 5);
    assert_eq!(count(refused(FederationRefusal::PayloadTooLarge)), 1);
    let unsupported = FederationOutcome::Reject(RejectReason::UnsupportedMethod);
    assert_eq!(count(unsupported), 1);
}

#[tokio::test]
async fn wrong_credentials_and_declared_taps() {
    let (app, metrics) = app_with_metrics().await;
    let (status, _, json) = call(
        &app,
        Some(TOKEN),
        r#"{"userPrincipalName":"alice@example.org","credential":"wrong"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["reasonCode"], "invalid_credentials");
    let (status, _, json) = call(
        &app,
        Some(TOKEN),
        r#"{"userPrincipalName":"alice@example.org","credential":"whatever","method":"temporaryAccessPass"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json["reasonCode"], "tap_not_supported_federation");
    assert_eq!(
        json["error"]["message"],
        "A Temporary Access Pass can't be used with the federation (AD FS) adapter. Use it for web sign-in at https://tap.example.org."
    );
    let count = |outcome| metrics.group::<FederationMetrics>().requests.get(outcome);
    let reject = FederationOutcome::Reject;
    assert_eq!(count(reject(RejectReason::InvalidCredentials)), 1);
    assert_eq!(count(reject(RejectReason::TapNotSupported)), 1);
    let federation = crate::metrics::TapRejection::Federation;
    assert_eq!(metrics.tap_rejections.get(federation), 1);
}

#[tokio::test]
async fn metadata_lists_password_only_and_unknown_paths_are_json_404s() {
    let app = app().await;
    let response = app
        .clone()
        .oneshot(HttpRequest::get(METADATA_PATH).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["supportedMethods"], json!(["password"]));
    assert_eq!(json["temporaryAccessPassSupported"], false);
    assert_eq!(
        json["unsupportedMethods"][0]["reasonCode"],
        "tap_not_supported_federation"
    );
    let response = app
        .oneshot(HttpRequest::get("/nope").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[test]
fn bearer_tokens_are_parsed_strictly() {
    let headers = |values: &[&str]| {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        map
    };
    assert_eq!(bearer_token(&headers(&["Bearer abc"])), Some(&b"abc"[..]));
    assert_eq!(bearer_token(&headers(&["bearer  abc "])), Some(&b"abc"[..]));
    assert_eq!(bearer_token(&headers(&["Basic abc"])), None);
    assert_eq!(bearer_token(&headers(&["Bearer "])), None);
    assert_eq!(bearer_token(&headers(&["Bearer"])), None);
    assert_eq!(bearer_token(&headers(&["Bearer a", "Bearer b"])), None);
    assert_eq!(bearer_token(&headers(&[])), None);
}
