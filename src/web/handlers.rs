//! The axum routes of the site. The extractors of [`super::extract`] have found the visitor
//! and checked request forgery before a handler runs; a handler calls one step of the sign-in
//! service ([`crate::signin::SelfService`]) and renders a page or a small JSON answer for the
//! WebAuthn script. Failures become responses in exactly one place per response kind
//! ([`PageFailure`], [`JsonFailure`]); visitors never see internal detail.
//!
//! May depend on: axum, `signin` (through the state), the sibling modules.

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Form, Json, Router};
use maud::Markup;
use serde::Deserialize;
use serde_json::json;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};
use zeroize::Zeroizing;

use super::extract::{
    pre_sign_in_csrf, AnonymousVisitor, AnyVisitor, Checked, CsrfField, PendingVisitor,
    SessionVisitor, SignedInVisitor,
};
use super::pages::{self, Notice};
use super::respond::{
    home_of, landing, page, redirect, refusal_status, refused_page, signed_out, with_cookie,
    ClearSession, JsonFailure, PageFailure,
};
use super::security_info::SecurityInfo;
use super::session::{clear_cookie, cookie_names, set_cookie};
use super::signin::{Current, Prompt, SignInError, SignedIn};
use super::{Failure, Source, WebState};
use crate::model::MethodKind;

/// What a page handler answers.
type PageResult = Result<Response, PageFailure>;
/// What a handler of the WebAuthn script answers.
type JsonResult = Result<Response, JsonFailure>;

/// Largest request body accepted (forms and WebAuthn JSON are a few KiB).
const BODY_LIMIT: usize = 64 * 1024;

/// What the site allows a page to load: only itself, no frames, no inline script or style.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The routes of the web registration site, with its state; merge other routers into it.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/sign-in", get(home).post(identify))
        .route("/sign-in/tap", post(sign_in_tap))
        .route("/sign-in/password", post(sign_in_password))
        .route("/sign-in/verify", get(verify_page))
        .route("/sign-in/verify/code", post(verify_code))
        .route("/sign-in/passkey/start", post(passkey_sign_in_start))
        .route("/sign-in/passkey/finish", post(passkey_sign_in_finish))
        .route("/security-info", get(security_info_page))
        .route(
            "/security-info/passkeys/start",
            post(passkey_register_start),
        )
        .route(
            "/security-info/passkeys/finish",
            post(passkey_register_finish),
        )
        .route("/security-info/authenticator-app", post(app_start))
        .route(
            "/security-info/authenticator-app/confirm",
            post(app_confirm),
        )
        .route("/security-info/methods/{id}/delete", post(delete_method))
        .route(
            "/security-info/temporary-access-pass/delete",
            post(delete_tap),
        )
        .route("/register", get(wizard))
        .route("/sign-out", post(sign_out))
        .route("/assets/tapd.css", get(stylesheet))
        .route("/assets/webauthn.js", get(script))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::map_response_with_state(
            state.clone(),
            security_headers,
        ))
        .with_state(state)
}

async fn security_headers(State(state): State<WebState>, response: Response) -> Response {
    let mut response = clear_session_if_asked(&state, response);
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null` and
    // the origin check could only lean on Fetch Metadata.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if state.settings().public_url.is_https() {
        headers.insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// Clears the session cookie on a response marked [`ClearSession`] (the cookie's name and
/// attributes come from the settings, which the failure mapping doesn't hold).
fn clear_session_if_asked(state: &WebState, response: Response) -> Response {
    if response.extensions().get::<ClearSession>().is_none() {
        return response;
    }
    let secure = state.settings().secure_cookies;
    with_cookie(
        response,
        Some(clear_cookie(cookie_names(secure).session, secure)),
    )
}

// ---- forms ----

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CsrfForm {
    csrf: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IdentifyForm {
    csrf: Option<String>,
    username: String,
    prefer: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct CredentialForm {
    csrf: Option<String>,
    username: String,
    code: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CodeForm {
    csrf: Option<String>,
    code: String,
    ceremony: String,
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Notices {
    added: Option<String>,
    deleted: Option<String>,
}

#[derive(Deserialize)]
struct PasskeyFinish<T> {
    ceremony: String,
    #[serde(default)]
    name: Option<String>,
    credential: T,
}

impl CsrfField for CsrfForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

impl CsrfField for IdentifyForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

impl CsrfField for CredentialForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

impl CsrfField for CodeForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

// ---- handlers: signing in ----

fn session_cookie(state: &WebState, signed_in: &SignedIn) -> String {
    let secure = state.settings().secure_cookies;
    set_cookie(
        cookie_names(secure).session,
        &signed_in.session_id,
        secure,
        Some(signed_in.session.expires),
        state.signin().now(),
    )
}

/// `response` for a fresh session: its cookie set.
fn with_session(state: &WebState, signed_in: &SignedIn, response: Response) -> Response {
    with_cookie(response, Some(session_cookie(state, signed_in)))
}

async fn home(State(state): State<WebState>, visitor: AnyVisitor) -> Response {
    match &visitor.current {
        Some(current) => redirect(home_of(current)),
        None => {
            let (csrf, cookie) = pre_sign_in_csrf(&state, visitor.pre_sign_in);
            with_cookie(page(StatusCode::OK, pages::sign_in(&csrf, None)), cookie)
        }
    }
}

async fn identify(
    State(state): State<WebState>,
    checked: Checked<Form<IdentifyForm>, AnonymousVisitor>,
) -> PageResult {
    let (Form(form), visitor) = (checked.body, checked.visitor);
    let csrf = visitor.pre_sign_in.unwrap_or_default();
    let username = form.username.trim();
    if username.is_empty() {
        let note = Notice::Error("Enter your user name or email.".to_owned());
        let markup = pages::sign_in(&csrf, Some(&note));
        return Ok(page(StatusCode::BAD_REQUEST, markup));
    }
    let prompt = if form.prefer.as_deref() == Some("password") {
        Prompt::Password
    } else {
        state.signin().prompt_for(username).await?
    };
    Ok(page(
        StatusCode::OK,
        match prompt {
            Prompt::TemporaryAccessPass => pages::tap_prompt(&csrf, username, None),
            Prompt::Password => pages::password_prompt(&csrf, username, None),
        },
    ))
}

async fn sign_in_tap(
    State(state): State<WebState>,
    checked: Checked<Form<CredentialForm>, AnonymousVisitor>,
) -> PageResult {
    sign_in_with(state, checked, true).await
}

async fn sign_in_password(
    State(state): State<WebState>,
    checked: Checked<Form<CredentialForm>, AnonymousVisitor>,
) -> PageResult {
    sign_in_with(state, checked, false).await
}

async fn sign_in_with(
    state: WebState,
    checked: Checked<Form<CredentialForm>, AnonymousVisitor>,
    tap: bool,
) -> PageResult {
    let (Form(form), visitor) = (checked.body, checked.visitor);
    let username = form.username.trim().to_owned();
    match attempt(&state, tap, &username, form, &visitor.source).await {
        Ok(signed_in) => Ok(to_landing(&state, &signed_in)),
        Err(SignInError::Refused(refusal)) => {
            let csrf = visitor.pre_sign_in.unwrap_or_default();
            let note = Notice::Error(refusal.message(state.settings().public_url.as_str()));
            let markup = credential_prompt(tap, &csrf, &username, &note);
            Ok(refused_page(&refusal, markup))
        }
        Err(SignInError::Failed(f)) => Err(f.into()),
    }
}

/// One TAP or password sign-in attempt with what the form carried.
async fn attempt(
    state: &WebState,
    tap: bool,
    username: &str,
    form: CredentialForm,
    source: &Source,
) -> Result<SignedIn, SignInError> {
    if tap {
        let code = Zeroizing::new(form.code.unwrap_or_default().trim().to_owned());
        state
            .signin()
            .sign_in_with_tap(username, code, source)
            .await
    } else {
        let password = Zeroizing::new(form.password.unwrap_or_default());
        state
            .signin()
            .sign_in_with_password(username, password, source)
            .await
    }
}

/// The redirect to where a fresh session goes first, with its cookie.
fn to_landing(state: &WebState, signed_in: &SignedIn) -> Response {
    with_session(state, signed_in, redirect(landing(signed_in)))
}

/// The TAP or password prompt again, with what went wrong.
fn credential_prompt(tap: bool, csrf: &str, username: &str, note: &Notice) -> Markup {
    if tap {
        pages::tap_prompt(csrf, username, Some(note))
    } else {
        pages::password_prompt(csrf, username, Some(note))
    }
}

async fn verify_page(State(state): State<WebState>, visitor: PendingVisitor) -> PageResult {
    second_factor_page(&state, &visitor.current, None, StatusCode::OK).await
}

async fn second_factor_page(
    state: &WebState,
    current: &Current,
    note: Option<&Notice>,
    status: StatusCode,
) -> PageResult {
    let methods = state.signin().methods_of(current).await?;
    let has_app = methods.iter().any(|m| m.kind == MethodKind::SoftwareOath);
    let has_passkey = methods.iter().any(|m| m.kind == MethodKind::Fido2);
    Ok(page(
        status,
        pages::second_factor(
            &current.session().csrf_token,
            current.user(),
            has_app,
            has_passkey,
            note,
        ),
    ))
}

async fn verify_code(
    State(state): State<WebState>,
    checked: Checked<Form<CodeForm>, PendingVisitor>,
) -> PageResult {
    let (Form(form), visitor) = (checked.body, checked.visitor);
    let current = &visitor.current;
    match state
        .signin()
        .verify_app_code(current, &form.code, &visitor.source)
        .await
    {
        Ok(signed_in) => Ok(to_landing(&state, &signed_in)),
        Err(SignInError::Refused(refusal)) => {
            let note = Notice::Error(refusal.message(state.settings().public_url.as_str()));
            let (status, _) = refusal_status(&refusal);
            second_factor_page(&state, current, Some(&note), status).await
        }
        Err(SignInError::Failed(f)) => Err(f.into()),
    }
}

async fn passkey_sign_in_start(
    State(state): State<WebState>,
    checked: Checked<(), AnyVisitor<JsonFailure>>,
) -> JsonResult {
    let visitor = checked.visitor;
    let challenge = state
        .signin()
        .start_passkey_sign_in(visitor.current.as_ref(), &visitor.source)
        .await?;
    let answer = json!({ "ceremony": challenge.ceremony_id, "options": challenge.options });
    Ok(Json(answer).into_response())
}

async fn passkey_sign_in_finish(
    State(state): State<WebState>,
    checked: Checked<Json<PasskeyFinish<PublicKeyCredential>>, AnyVisitor<JsonFailure>>,
) -> JsonResult {
    let (Json(body), visitor) = (checked.body, checked.visitor);
    let current = visitor.current.as_ref();
    let outcome = state
        .signin()
        .finish_passkey_sign_in(current, &body.ceremony, &body.credential, &visitor.source)
        .await;
    match outcome {
        Ok(signed_in) => {
            let response = Json(json!({ "redirect": landing(&signed_in) })).into_response();
            Ok(with_session(&state, &signed_in, response))
        }
        Err(SignInError::Refused(refusal)) => {
            let (status, _) = refusal_status(&refusal);
            let message = refusal.message(state.settings().public_url.as_str());
            Ok((status, Json(json!({ "error": message }))).into_response())
        }
        Err(SignInError::Failed(f)) => Err(f.into()),
    }
}

// ---- handlers: security info ----

/// The confirmation a redirect back to the security info page asked for.
fn notice_of(notices: &Notices) -> Option<Notice> {
    let success = |text: &str| Some(Notice::Success(text.to_owned()));
    match (notices.added.as_deref(), notices.deleted.as_deref()) {
        (Some("passkey"), _) => success("Your passkey was added."),
        (Some("app"), _) => success("Your authenticator app was added."),
        (_, Some("method")) => success("The method was deleted."),
        (_, Some("tap")) => success("Your Temporary Access Pass was deleted."),
        _ => None,
    }
}

/// What the Security info page and the registration wizard show `current`'s user.
async fn security_info_of(state: &WebState, current: &Current) -> Result<SecurityInfo, Failure> {
    state.signin().registration(current)?.security_info().await
}

async fn security_info_page(
    State(state): State<WebState>,
    Query(notices): Query<Notices>,
    visitor: AnyVisitor,
) -> PageResult {
    let current = match &visitor.current {
        None => return Ok(redirect("/")),
        Some(c) if c.is_pending() || c.session().interrupt_mode => return Ok(redirect(home_of(c))),
        Some(c) => c,
    };
    let info = security_info_of(&state, current).await?;
    let (csrf, session) = (&current.session().csrf_token, current.session());
    let note = notice_of(&notices);
    let markup = pages::security_info(csrf, current.user(), session, &info, note.as_ref());
    Ok(page(StatusCode::OK, markup))
}

async fn wizard(State(state): State<WebState>, visitor: SignedInVisitor) -> PageResult {
    let current = &visitor.current;
    if !current.session().interrupt_mode {
        return Ok(redirect("/security-info"));
    }
    let info = security_info_of(&state, current).await?;
    let (csrf, session) = (&current.session().csrf_token, current.session());
    let markup = pages::interrupt_wizard(csrf, current.user(), session, &info, None);
    Ok(page(StatusCode::OK, markup))
}

async fn passkey_register_start(
    State(state): State<WebState>,
    checked: Checked<(), SignedInVisitor<JsonFailure>>,
) -> JsonResult {
    let registration = state.signin().registration(&checked.visitor.current)?;
    let challenge = registration.start_passkey_registration().await?;
    let answer = json!({ "ceremony": challenge.ceremony_id, "options": challenge.options });
    Ok(Json(answer).into_response())
}

async fn passkey_register_finish(
    State(state): State<WebState>,
    checked: Checked<
        Json<PasskeyFinish<RegisterPublicKeyCredential>>,
        SignedInVisitor<JsonFailure>,
    >,
) -> JsonResult {
    let (Json(body), visitor) = (checked.body, checked.visitor);
    let name = body.name.as_deref();
    state
        .signin()
        .registration(&visitor.current)?
        .finish_passkey_registration(&body.ceremony, name, &body.credential, &visitor.source)
        .await?;
    Ok(Json(json!({ "redirect": "/security-info?added=passkey" })).into_response())
}

async fn app_start(
    State(state): State<WebState>,
    checked: Checked<Form<CsrfForm>, SignedInVisitor>,
) -> PageResult {
    let current = &checked.visitor.current;
    let registration = state.signin().registration(current)?;
    let enrolment = registration.start_authenticator_app().await?;
    let csrf = &current.session().csrf_token;
    let markup = pages::authenticator_app(csrf, current.user(), &enrolment);
    Ok(page(StatusCode::OK, markup))
}

async fn app_confirm(
    State(state): State<WebState>,
    checked: Checked<Form<CodeForm>, SignedInVisitor>,
) -> PageResult {
    let (Form(form), visitor) = (checked.body, checked.visitor);
    let current = &visitor.current;
    let name = form.name.as_deref();
    let outcome = state
        .signin()
        .registration(current)?
        .confirm_authenticator_app(&form.ceremony, &form.code, name, &visitor.source)
        .await?;
    match outcome {
        Ok(_) if current.session().interrupt_mode => Ok(redirect("/register")),
        Ok(_) => Ok(redirect("/security-info?added=app")),
        Err(retry) => {
            let csrf = &current.session().csrf_token;
            let markup = pages::authenticator_app(csrf, current.user(), &retry);
            Ok(page(StatusCode::BAD_REQUEST, markup))
        }
    }
}

async fn delete_method(
    State(state): State<WebState>,
    Path(method_id): Path<String>,
    checked: Checked<Form<CsrfForm>, SignedInVisitor>,
) -> PageResult {
    let visitor = checked.visitor;
    let registration = state.signin().registration(&visitor.current)?;
    registration
        .delete_own_method(&method_id, &visitor.source)
        .await?;
    Ok(redirect("/security-info?deleted=method"))
}

async fn delete_tap(
    State(state): State<WebState>,
    checked: Checked<Form<CsrfForm>, SignedInVisitor>,
) -> PageResult {
    let visitor = checked.visitor;
    let registration = state.signin().registration(&visitor.current)?;
    if !registration.delete_own_tap(&visitor.source).await? {
        return Ok(redirect("/security-info?deleted=tap"));
    }
    let markup = pages::message(
        "",
        "Temporary Access Pass deleted",
        "Your Temporary Access Pass was deleted. You signed in with it, so you have been signed out.",
        false,
    );
    Ok(signed_out(page(StatusCode::OK, markup)))
}

async fn sign_out(
    State(state): State<WebState>,
    checked: Checked<Form<CsrfForm>, SessionVisitor>,
) -> PageResult {
    let visitor = checked.visitor;
    state
        .signin()
        .sign_out(&visitor.current, &visitor.source)
        .await?;
    let markup = pages::message("", "Signed out", "You have signed out.", false);
    Ok(signed_out(page(StatusCode::OK, markup)))
}

// ---- assets ----

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", pages::STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", pages::WEBAUTHN_SCRIPT)
}
