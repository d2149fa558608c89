//! Expiry edges below the HTTP layer, to the second, with the manual clock: TAP validity, a
//! TAP session never outliving its TAP, the 10-minute registration windows (one-time and
//! multi-use), the second-factor window, and sessions ending when policy changes.

use chrono::Duration;
use serde_json::json;
use tapd::model::{MethodKind, RegisteredMethod, WebAuthMethod};
use tapd::policy::{PolicyPatch, SignInFailure};
use tapd::web::security_info::{AppEnrolment, REGISTRATION_TOO_SLOW, WINDOW_CLOSED};
use tapd::web::signin::{Current, Refusal, SignInError, SignedIn};
use tapd::web::{totp, Failure, Source};
use zeroize::Zeroizing;

use crate::harness::Site;

fn source() -> Source {
    Source::from_socket("127.0.0.1:50000".parse().unwrap())
}

async fn tap_sign_in(site: &Site, user: &str, code: &str) -> Result<SignedIn, SignInError> {
    site.signin()
        .sign_in_with_tap(user, Zeroizing::new(code.to_owned()), &source())
        .await
}

fn refusal(result: Result<SignedIn, SignInError>) -> Refusal {
    match result {
        Err(SignInError::Refused(r)) => r,
        Err(SignInError::Failed(f)) => panic!("failed: {f}"),
        Ok(s) => panic!("signed in: {:?}", s.session),
    }
}

fn forbidden_message<T: std::fmt::Debug>(result: Result<T, Failure>) -> String {
    match result {
        Err(Failure::Forbidden(m)) => m,
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

/// The session `signed_in` opened, as a request carrying its cookie finds it.
async fn current(site: &Site, signed_in: &SignedIn) -> Current {
    site.signin()
        .current(Some(&signed_in.session_id))
        .await
        .unwrap()
        .expect("session")
}

/// Starts adding an authenticator app in `signed_in`'s session, as its handler does.
async fn start_app(site: &Site, signed_in: &SignedIn) -> Result<AppEnrolment, Failure> {
    let current = current(site, signed_in).await;
    let registration = site.signin().registration(&current)?;
    registration.start_authenticator_app().await
}

/// Confirms `enrolment` in `signed_in`'s session with the code the app shows now.
async fn confirm_app(
    site: &Site,
    signed_in: &SignedIn,
    enrolment: &AppEnrolment,
) -> Result<Result<RegisteredMethod, AppEnrolment>, Failure> {
    let secret = totp::base32_decode(&enrolment.secret).unwrap();
    let code = totp::code_at_step(&secret, totp::step_at(site.now()));
    let current = current(site, signed_in).await;
    let registration = site.signin().registration(&current)?;
    registration
        .confirm_authenticator_app(&enrolment.ceremony_id, &code, None, &source())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_works_from_its_start_to_the_second_before_its_end() {
    let site = Site::new().await;
    let start = site.now() + Duration::hours(1);
    let code = site.create_tap("alice", false, Some(start), Some(60)).await;

    site.clock.set(start - Duration::seconds(1));
    assert_eq!(
        refusal(tap_sign_in(&site, "alice", &code).await),
        Refusal::Tap(SignInFailure::TapNotYetValid { start })
    );
    site.clock.set(start);
    tap_sign_in(&site, "alice", &code).await.unwrap();
    site.clock
        .set(start + Duration::minutes(60) - Duration::seconds(1));
    tap_sign_in(&site, "alice", &code).await.unwrap();
    site.clock.set(start + Duration::minutes(60));
    assert_eq!(
        refusal(tap_sign_in(&site, "alice", &code).await),
        Refusal::Tap(SignInFailure::TapExpired)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_session_never_outlives_its_tap() {
    let site = Site::new().await;
    let code = site.create_tap("alice", false, None, Some(60)).await;
    let tap_end = site.now() + Duration::minutes(60);
    site.clock.advance(Duration::minutes(30));
    let signed_in = tap_sign_in(&site, "alice", &code).await.unwrap();
    assert_eq!(
        signed_in.session.auth_method,
        WebAuthMethod::TemporaryAccessPass
    );
    assert_eq!(
        signed_in.session.expires, tap_end,
        "capped by the TAP, not 1 h"
    );
    assert_eq!(signed_in.session.tap_expires, Some(tap_end));
    assert_eq!(
        signed_in.session.registration_deadline, None,
        "multi-use: none until a registration starts"
    );

    site.clock.set(tap_end - Duration::seconds(1));
    assert!(site
        .signin()
        .current(Some(&signed_in.session_id))
        .await
        .unwrap()
        .is_some());
    site.clock.set(tap_end);
    assert!(site
        .signin()
        .current(Some(&signed_in.session_id))
        .await
        .unwrap()
        .is_none());
    // The expired session was removed from the store.
    let hash = tapd::web::session::hash_id(&signed_in.session_id);
    assert!(site
        .service
        .store()
        .web_session(&hash)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_one_time_tap_registrations_must_finish_within_ten_minutes() {
    let site = Site::new().await;
    let code = site.create_tap("alice", true, None, None).await;
    let signed_in = tap_sign_in(&site, "alice", &code).await.unwrap();
    let deadline = site.now() + Duration::minutes(10);
    assert_eq!(signed_in.session.registration_deadline, Some(deadline));

    // Started at 9:58 and confirmed at 9:59: saved.
    site.clock.set(deadline - Duration::seconds(2));
    let enrolment = start_app(&site, &signed_in).await.unwrap();
    site.clock.set(deadline - Duration::seconds(1));
    confirm_app(&site, &signed_in, &enrolment)
        .await
        .unwrap()
        .unwrap();

    // Started before the deadline but confirmed at it: refused.
    site.clock.set(deadline - Duration::seconds(1));
    let late = start_app(&site, &signed_in).await.unwrap();
    site.clock.set(deadline);
    let refused = confirm_app(&site, &signed_in, &late).await;
    assert_eq!(forbidden_message(refused), WINDOW_CLOSED);

    // Nothing new can start at or after the deadline, and the window does not restart.
    assert_eq!(
        forbidden_message(start_app(&site, &signed_in).await),
        WINDOW_CLOSED
    );
    let current = current(&site, &signed_in).await;
    assert_eq!(
        forbidden_message(
            site.signin()
                .registration(&current)
                .unwrap()
                .start_passkey_registration()
                .await
        ),
        WINDOW_CLOSED
    );
    site.clock.advance(Duration::minutes(20));
    assert_eq!(
        forbidden_message(start_app(&site, &signed_in).await),
        WINDOW_CLOSED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_multi_use_tap_the_window_restarts_with_each_registration() {
    let site = Site::new().await;
    let code = site.create_tap("alice", false, None, Some(120)).await;
    let signed_in = tap_sign_in(&site, "alice", &code).await.unwrap();
    let t_sign_in = site.now();

    // Thirty minutes after signing in a registration may still start; it opens 10 minutes.
    site.clock.set(t_sign_in + Duration::minutes(30));
    let first = start_app(&site, &signed_in).await.unwrap();
    assert_eq!(
        current(&site, &signed_in)
            .await
            .session()
            .registration_deadline,
        Some(t_sign_in + Duration::minutes(40))
    );
    // Confirming at the new deadline is too late.
    site.clock.set(t_sign_in + Duration::minutes(40));
    assert_eq!(
        forbidden_message(confirm_app(&site, &signed_in, &first).await),
        REGISTRATION_TOO_SLOW
    );
    // A new registration restarts the window.
    site.clock.set(t_sign_in + Duration::minutes(45));
    let second = start_app(&site, &signed_in).await.unwrap();
    site.clock.set(t_sign_in + Duration::minutes(49));
    confirm_app(&site, &signed_in, &second)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_factor_must_come_within_ten_minutes_of_the_password() {
    let site = Site::new().await;
    let bob = site.service.store().user("bob").await.unwrap().unwrap();
    let method = RegisteredMethod {
        id: "m-app".into(),
        user_id: bob.id.clone(),
        kind: MethodKind::SoftwareOath,
        display_name: "Authenticator app".into(),
        created: site.now(),
        data: json!({ "secret": "JBSWY3DPEHPK3PXP", "lastUsedStep": null }).to_string(),
    };
    let event = tapd::model::NewAuditEvent {
        time: site.now(),
        actor: "bob@example.org".into(),
        activity: "User registered security info".into(),
        target: None,
        result: tapd::model::AuditResult::Success,
        reason_code: None,
        channel: tapd::model::Channel::Web,
        source_address: None,
        details: json!({}),
    };
    site.service
        .store()
        .add_method(&method, &event)
        .await
        .unwrap();
    let signed_in = site
        .signin()
        .sign_in_with_password("bob", Zeroizing::new("bob-demo-pw".into()), &source())
        .await
        .unwrap();
    assert_eq!(
        signed_in.session.auth_method,
        WebAuthMethod::PasswordPendingSecondFactor
    );
    assert_eq!(
        signed_in.session.expires,
        site.now() + Duration::minutes(10)
    );
    let pending = site
        .signin()
        .current(Some(&signed_in.session_id))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        site.signin().registration(&pending),
        Err(Failure::SignInRequired)
    ));
    site.clock.advance(Duration::minutes(10));
    assert!(site
        .signin()
        .current(Some(&signed_in.session_id))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_session_ends_when_the_policy_no_longer_covers_the_user() {
    let site = Site::new().await;
    let code = site.create_tap("alice", false, None, None).await;
    let signed_in = tap_sign_in(&site, "alice", &code).await.unwrap();
    assert!(site
        .signin()
        .current(Some(&signed_in.session_id))
        .await
        .unwrap()
        .is_some());
    let patch =
        PolicyPatch::from_json(br#"{"excludeTargets":[{"id":"alice","targetType":"user"}]}"#)
            .unwrap();
    site.admin().await.patch_policy(&patch).await.unwrap();
    assert!(site
        .signin()
        .current(Some(&signed_in.session_id))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_sign_ins_and_tap_refusals_are_counted_in_metrics() {
    use tapd::metrics::{TapRejection, TapUseChannel, WebSignIn};
    let site = Site::new().await;
    let metrics = site.service.metrics().clone();
    let start = site.now() + Duration::hours(1);
    let code = site.create_tap("alice", false, Some(start), Some(60)).await;

    refusal(tap_sign_in(&site, "alice", &code).await);
    assert_eq!(metrics.web_sign_ins.get(WebSignIn::TapFailure), 1);
    assert_eq!(metrics.tap_rejections.get(TapRejection::WebNotYetValid), 1);
    assert_eq!(metrics.taps_used.get(TapUseChannel::Web), 0);

    site.clock.set(start);
    tap_sign_in(&site, "alice", &code).await.unwrap();
    assert_eq!(metrics.web_sign_ins.get(WebSignIn::TapSuccess), 1);
    assert_eq!(metrics.taps_used.get(TapUseChannel::Web), 1);

    let wrong = site
        .signin()
        .sign_in_with_password("bob", Zeroizing::new("not-bobs-password".into()), &source())
        .await;
    assert!(matches!(
        wrong,
        Err(SignInError::Refused(Refusal::InvalidPassword))
    ));
    assert_eq!(metrics.web_sign_ins.get(WebSignIn::PasswordFailure), 1);
    site.signin()
        .sign_in_with_password("bob", Zeroizing::new("bob-demo-pw".into()), &source())
        .await
        .unwrap();
    assert_eq!(metrics.web_sign_ins.get(WebSignIn::PasswordSuccess), 1);
}
