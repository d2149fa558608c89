//! The axum routes of the site: each handler finds the session, checks request forgery (the
//! origin headers and the CSRF token) before anything changes, calls [`signin`] or
//! [`security_info`], and renders a page or a small JSON answer for the WebAuthn script.
//! [`Failure`] becomes a response in exactly one place ([`failure_page`] /
//! [`failure_json`]); visitors never see internal detail.
//!
//! [`signin`]: super::signin
//! [`security_info`]: super::security_info
//!
//! May depend on: axum, the sibling modules.

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY, RETRY_AFTER,
    SET_COOKIE, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Extension, Form, Json, Router};
use maud::Markup;
use serde::Deserialize;
use serde_json::json;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};
use zeroize::Zeroizing;

use super::pages::{self, Notice};
use super::server::ClientAddr;
use super::session::{
    clear_cookie, cookie_names, is_token, origin_allowed, random_token, read_cookie, set_cookie,
    tokens_match, CSRF_HEADER,
};
use super::signin::{Current, Prompt, Refusal, SignInError, SignedIn};
use super::{Failure, Source, WebState};
use crate::model::MethodKind;

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

async fn security_headers(State(state): State<WebState>, mut response: Response) -> Response {
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

// ---- request context ----

/// What every handler knows about its request.
struct Ctx {
    current: Option<Current>,
    source: Source,
    headers: HeaderMap,
}

impl Ctx {
    async fn new(
        state: &WebState,
        headers: HeaderMap,
        peer: Option<Extension<ClientAddr>>,
    ) -> Result<Ctx, Failure> {
        let names = cookie_names(state.settings().secure_cookies);
        let cookie = read_cookie(&headers, names.session);
        let current = state.current(cookie.as_deref()).await?;
        let source = source_of(state, &headers, peer.map(|Extension(ClientAddr(a))| a));
        Ok(Ctx {
            current,
            source,
            headers,
        })
    }

    /// Checks the origin headers and the CSRF token before anything changes.
    fn check_forgery(&self, state: &WebState, token: Option<&str>) -> Result<(), Failure> {
        if !origin_allowed(&self.headers, &state.settings().public_url) {
            return Err(Failure::Forbidden(
                "This request came from another site and was refused.".to_owned(),
            ));
        }
        let expected = match &self.current {
            Some(current) => Some(current.session.csrf_token.clone()),
            None => pre_sign_in_token(state, &self.headers),
        };
        match (expected, token) {
            (Some(expected), Some(token)) if tokens_match(&expected, token) => Ok(()),
            _ => Err(Failure::Forbidden(
                "This page has expired or the form was incomplete, so nothing was changed. \
                 Go back, reload the page and try again."
                    .to_owned(),
            )),
        }
    }

    /// The CSRF token of a JSON request (header).
    fn header_token(&self) -> Option<&str> {
        self.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())
    }

    fn full(&self) -> Result<&Current, Failure> {
        match &self.current {
            Some(current) if !current.is_pending() => Ok(current),
            _ => Err(Failure::SignInRequired),
        }
    }
}

/// The client address: the socket peer, or, when the peer is a trusted proxy, the first
/// untrusted address of `X-Forwarded-For` from the right ([`super::forwarded_client`]).
fn source_of(state: &WebState, headers: &HeaderMap, peer: Option<std::net::SocketAddr>) -> Source {
    let peer = peer.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let forwarded = super::forwarded_client(
        peer.ip(),
        headers.get_all("x-forwarded-for"),
        &state.settings().trusted_proxies,
    );
    match forwarded {
        Some(ip) => Source {
            ip,
            text: format!("{ip} (via {peer})"),
        },
        None => Source::from_socket(peer),
    }
}

/// The pre-sign-in CSRF cookie's value, when it is well formed.
fn pre_sign_in_token(state: &WebState, headers: &HeaderMap) -> Option<String> {
    let names = cookie_names(state.settings().secure_cookies);
    read_cookie(headers, names.csrf).filter(|t| is_token(t))
}

/// The pre-sign-in CSRF token for a page, and the cookie to set when the browser has none.
fn pre_sign_in_csrf(state: &WebState, headers: &HeaderMap) -> (String, Option<String>) {
    match pre_sign_in_token(state, headers) {
        Some(token) => (token, None),
        None => {
            let token = random_token();
            let names = cookie_names(state.settings().secure_cookies);
            let cookie = set_cookie(
                names.csrf,
                &token,
                state.settings().secure_cookies,
                None,
                state.now(),
            );
            (token, Some(cookie))
        }
    }
}

// ---- responses ----

fn page(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

fn with_cookie(mut response: Response, cookie: Option<String>) -> Response {
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// Where a fresh session goes first.
fn landing(signed_in: &SignedIn) -> &'static str {
    if signed_in.session.auth_method == crate::model::WebAuthMethod::PasswordPendingSecondFactor {
        "/sign-in/verify"
    } else if signed_in.session.interrupt_mode {
        "/register"
    } else {
        "/security-info"
    }
}

fn session_cookie(state: &WebState, signed_in: &SignedIn) -> String {
    let secure = state.settings().secure_cookies;
    set_cookie(
        cookie_names(secure).session,
        &signed_in.session_id,
        secure,
        Some(signed_in.session.expires),
        state.now(),
    )
}

fn cleared_session_cookie(state: &WebState) -> String {
    let secure = state.settings().secure_cookies;
    clear_cookie(cookie_names(secure).session, secure)
}

/// The one mapping of failures to pages.
fn failure_page(state: &WebState, failure: Failure) -> Response {
    match failure {
        Failure::SignInRequired => with_cookie(redirect("/"), Some(cleared_session_cookie(state))),
        Failure::BadRequest(message) => page(
            StatusCode::BAD_REQUEST,
            pages::message("", "Something's not right", &message, true),
        ),
        Failure::Forbidden(message) => page(
            StatusCode::FORBIDDEN,
            pages::message("", "That didn't work", &message, true),
        ),
        Failure::TooManyRequests(message) => {
            let mut response = page(
                StatusCode::TOO_MANY_REQUESTS,
                pages::message("", "Too many requests", &message, true),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("60"));
            response
        }
        Failure::Busy => {
            let mut response = page(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::message(
                    "",
                    "Too busy",
                    "Too many people are signing in right now. Try again in a few seconds.",
                    true,
                ),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("2"));
            response
        }
        Failure::Unavailable(detail) => {
            log::error!("web: service unavailable: {detail}");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::message(
                    "",
                    "Service unavailable",
                    "Sign-in can't reach the directory or its database right now. Try again in a minute.",
                    true,
                ),
            )
        }
        Failure::Internal(detail) => {
            log::error!("web: internal error: {detail}");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                pages::message(
                    "",
                    "Something went wrong",
                    "Something went wrong on our side. Try again.",
                    true,
                ),
            )
        }
    }
}

/// The same mapping for the WebAuthn script: `{"error": …}` with the status.
fn failure_json(failure: Failure) -> Response {
    let (status, message) = match failure {
        Failure::SignInRequired => (
            StatusCode::UNAUTHORIZED,
            "Your session has ended. Sign in again.".to_owned(),
        ),
        Failure::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
        Failure::Forbidden(m) => (StatusCode::FORBIDDEN, m),
        Failure::TooManyRequests(m) => (StatusCode::TOO_MANY_REQUESTS, m),
        Failure::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Too busy right now. Try again in a few seconds.".to_owned(),
        ),
        Failure::Unavailable(detail) => {
            log::error!("web: service unavailable: {detail}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is unavailable right now. Try again in a minute.".to_owned(),
            )
        }
        Failure::Internal(detail) => {
            log::error!("web: internal error: {detail}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side. Try again.".to_owned(),
            )
        }
    };
    (status, Json(json!({ "error": message }))).into_response()
}

/// The status a refusal is answered with (and `Retry-After` when throttled).
fn refusal_status(refusal: &Refusal) -> (StatusCode, Option<HeaderValue>) {
    match refusal {
        Refusal::Throttled(t) => (
            StatusCode::TOO_MANY_REQUESTS,
            HeaderValue::from_str(&t.retry_after.num_seconds().max(1).to_string()).ok(),
        ),
        _ => (StatusCode::UNAUTHORIZED, None),
    }
}

fn refused_page(refusal: &Refusal, markup: Markup) -> Response {
    let (status, retry) = refusal_status(refusal);
    let mut response = page(status, markup);
    if let Some(retry) = retry {
        response.headers_mut().insert(RETRY_AFTER, retry);
    }
    response
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

// ---- handlers: signing in ----

async fn home(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
) -> Response {
    let ctx = match Ctx::new(&state, headers, peer).await {
        Ok(ctx) => ctx,
        Err(f) => return failure_page(&state, f),
    };
    match &ctx.current {
        Some(current) if current.is_pending() => redirect("/sign-in/verify"),
        Some(current) if current.session.interrupt_mode => redirect("/register"),
        Some(_) => redirect("/security-info"),
        None => {
            let (csrf, cookie) = pre_sign_in_csrf(&state, &ctx.headers);
            with_cookie(page(StatusCode::OK, pages::sign_in(&csrf, None)), cookie)
        }
    }
}

async fn identify(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    Form(form): Form<IdentifyForm>,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        if ctx.current.is_some() {
            return Ok(redirect("/"));
        }
        ctx.check_forgery(&state, form.csrf.as_deref())?;
        let csrf = pre_sign_in_token(&state, &ctx.headers).unwrap_or_default();
        let username = form.username.trim();
        if username.is_empty() {
            let note = Notice::Error("Enter your user name or email.".to_owned());
            return Ok(page(
                StatusCode::BAD_REQUEST,
                pages::sign_in(&csrf, Some(&note)),
            ));
        }
        let prompt = if form.prefer.as_deref() == Some("password") {
            Prompt::Password
        } else {
            state.prompt_for(username).await?
        };
        Ok(page(
            StatusCode::OK,
            match prompt {
                Prompt::TemporaryAccessPass => pages::tap_prompt(&csrf, username, None),
                Prompt::Password => pages::password_prompt(&csrf, username, None),
            },
        ))
    }
    .await;
    result.unwrap_or_else(|f| failure_page(&state, f))
}

async fn sign_in_tap(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    Form(form): Form<CredentialForm>,
) -> Response {
    sign_in_with(state, peer, headers, form, true).await
}

async fn sign_in_password(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    Form(form): Form<CredentialForm>,
) -> Response {
    sign_in_with(state, peer, headers, form, false).await
}

async fn sign_in_with(
    state: WebState,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    form: CredentialForm,
    tap: bool,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        if ctx.current.is_some() {
            return Ok(redirect("/"));
        }
        ctx.check_forgery(&state, form.csrf.as_deref())?;
        let csrf = pre_sign_in_token(&state, &ctx.headers).unwrap_or_default();
        let username = form.username.trim().to_owned();
        let outcome = if tap {
            let code = Zeroizing::new(form.code.unwrap_or_default().trim().to_owned());
            state.sign_in_with_tap(&username, code, &ctx.source).await
        } else {
            let password = Zeroizing::new(form.password.unwrap_or_default());
            state
                .sign_in_with_password(&username, password, &ctx.source)
                .await
        };
        match outcome {
            Ok(signed_in) => Ok(with_cookie(
                redirect(landing(&signed_in)),
                Some(session_cookie(&state, &signed_in)),
            )),
            Err(SignInError::Refused(refusal)) => {
                let note = Notice::Error(refusal.message(state.settings().public_url.as_str()));
                let markup = if tap {
                    pages::tap_prompt(&csrf, &username, Some(&note))
                } else {
                    pages::password_prompt(&csrf, &username, Some(&note))
                };
                Ok(refused_page(&refusal, markup))
            }
            Err(SignInError::Failed(f)) => Err(f),
        }
    }
    .await;
    result.unwrap_or_else(|f| failure_page(&state, f))
}

async fn verify_page(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        let Some(current) = ctx.current.as_ref().filter(|c| c.is_pending()) else {
            return Ok(redirect("/"));
        };
        second_factor_page(&state, current, None, StatusCode::OK).await
    }
    .await;
    result.unwrap_or_else(|f| failure_page(&state, f))
}

async fn second_factor_page(
    state: &WebState,
    current: &Current,
    note: Option<&Notice>,
    status: StatusCode,
) -> Result<Response, Failure> {
    let methods = state.methods_of(&current.user).await?;
    let has_app = methods.iter().any(|m| m.kind == MethodKind::SoftwareOath);
    let has_passkey = methods.iter().any(|m| m.kind == MethodKind::Fido2);
    Ok(page(
        status,
        pages::second_factor(
            &current.session.csrf_token,
            &current.user,
            has_app,
            has_passkey,
            note,
        ),
    ))
}

async fn verify_code(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        let Some(current) = ctx.current.as_ref().filter(|c| c.is_pending()) else {
            return Ok(redirect("/"));
        };
        ctx.check_forgery(&state, form.csrf.as_deref())?;
        match state
            .verify_app_code(current, &form.code, &ctx.source)
            .await
        {
            Ok(signed_in) => Ok(with_cookie(
                redirect(landing(&signed_in)),
                Some(session_cookie(&state, &signed_in)),
            )),
            Err(SignInError::Refused(refusal)) => {
                let note = Notice::Error(refusal.message(state.settings().public_url.as_str()));
                let (status, _) = refusal_status(&refusal);
                second_factor_page(&state, current, Some(&note), status).await
            }
            Err(SignInError::Failed(f)) => Err(f),
        }
    }
    .await;
    result.unwrap_or_else(|f| failure_page(&state, f))
}

async fn passkey_sign_in_start(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        ctx.check_forgery(&state, ctx.header_token())?;
        let challenge = state
            .start_passkey_sign_in(ctx.current.as_ref(), &ctx.source)
            .await?;
        Ok(
            Json(json!({ "ceremony": challenge.ceremony_id, "options": challenge.options }))
                .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(failure_json)
}

async fn passkey_sign_in_finish(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    Json(body): Json<PasskeyFinish<PublicKeyCredential>>,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        ctx.check_forgery(&state, ctx.header_token())?;
        match state
            .finish_passkey_sign_in(
                ctx.current.as_ref(),
                &body.ceremony,
                &body.credential,
                &ctx.source,
            )
            .await
        {
            Ok(signed_in) => {
                let response = Json(json!({ "redirect": landing(&signed_in) })).into_response();
                Ok(with_cookie(
                    response,
                    Some(session_cookie(&state, &signed_in)),
                ))
            }
            Err(SignInError::Refused(refusal)) => {
                let (status, _) = refusal_status(&refusal);
                let message = refusal.message(state.settings().public_url.as_str());
                Ok((status, Json(json!({ "error": message }))).into_response())
            }
            Err(SignInError::Failed(f)) => Err(f),
        }
    }
    .await;
    result.unwrap_or_else(failure_json)
}

// ---- handlers: security info ----

async fn security_info_page(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    Query(notices): Query<Notices>,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        let current = match &ctx.current {
            None => return Ok(redirect("/")),
            Some(c) if c.is_pending() => return Ok(redirect("/sign-in/verify")),
            Some(c) if c.session.interrupt_mode => return Ok(redirect("/register")),
            Some(c) => c,
        };
        let info = state.security_info(current).await?;
        let note = match (notices.added.as_deref(), notices.deleted.as_deref()) {
            (Some("passkey"), _) => Some(Notice::Success("Your passkey was added.".to_owned())),
            (Some("app"), _) => Some(Notice::Success(
                "Your authenticator app was added.".to_owned(),
            )),
            (_, Some("method")) => Some(Notice::Success("The method was deleted.".to_owned())),
            (_, Some("tap")) => Some(Notice::Success(
                "Your Temporary Access Pass was deleted.".to_owned(),
            )),
            _ => None,
        };
        Ok(page(
            StatusCode::OK,
            pages::security_info(
                &current.session.csrf_token,
                &current.user,
                &current.session,
                &info,
                note.as_ref(),
            ),
        ))
    }
    .await;
    result.unwrap_or_else(|f| failure_page(&state, f))
}

async fn wizard(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        let current = ctx.full()?;
        if !current.session.interrupt_mode {
            return Ok(redirect("/security-info"));
        }
        let info = state.security_info(current).await?;
        Ok(page(
            StatusCode::OK,
            pages::interrupt_wizard(
                &current.session.csrf_token,
                &current.user,
                &current.session,
                &info,
                None,
            ),
        ))
    }
    .await;
    result.unwrap_or_else(|f| failure_page(&state, f))
}

async fn passkey_register_start(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        let current = ctx.full()?;
        ctx.check_forgery(&state, ctx.header_token())?;
        let challenge = state.start_passkey_registration(current).await?;
        Ok(
            Json(json!({ "ceremony": challenge.ceremony_id, "options": challenge.options }))
                .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(failure_json)
}

async fn passkey_register_finish(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    Json(body): Json<PasskeyFinish<RegisterPublicKeyCredential>>,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        let current = ctx.full()?;
        ctx.check_forgery(&state, ctx.header_token())?;
        state
            .finish_passkey_registration(
                current,
                &body.ceremony,
                body.name.as_deref(),
                &body.credential,
                &ctx.source,
            )
            .await?;
        Ok(Json(json!({ "redirect": "/security-info?added=passkey" })).into_response())
    }
    .await;
    result.unwrap_or_else(failure_json)
}

async fn app_start(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        let current = ctx.full()?;
        ctx.check_forgery(&state, form.csrf.as_deref())?;
        let enrolment = state.start_authenticator_app(current).await?;
        Ok(page(
            StatusCode::OK,
            pages::authenticator_app(&current.session.csrf_token, &current.user, &enrolment),
        ))
    }
    .await;
    result.unwrap_or_else(|f| failure_page(&state, f))
}

async fn app_confirm(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        let current = ctx.full()?;
        ctx.check_forgery(&state, form.csrf.as_deref())?;
        match state
            .confirm_authenticator_app(
                current,
                &form.ceremony,
                &form.code,
                form.name.as_deref(),
                &ctx.source,
            )
            .await?
        {
            Ok(_) if current.session.interrupt_mode => Ok(redirect("/register")),
            Ok(_) => Ok(redirect("/security-info?added=app")),
            Err(retry) => Ok(page(
                StatusCode::BAD_REQUEST,
                pages::authenticator_app(&current.session.csrf_token, &current.user, &retry),
            )),
        }
    }
    .await;
    result.unwrap_or_else(|f| failure_page(&state, f))
}

async fn delete_method(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    Path(method_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        let current = ctx.full()?;
        ctx.check_forgery(&state, form.csrf.as_deref())?;
        state
            .delete_own_method(current, &method_id, &ctx.source)
            .await?;
        Ok(redirect("/security-info?deleted=method"))
    }
    .await;
    result.unwrap_or_else(|f| failure_page(&state, f))
}

async fn delete_tap(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        let current = ctx.full()?;
        ctx.check_forgery(&state, form.csrf.as_deref())?;
        if state.delete_own_tap(current, &ctx.source).await? {
            let markup = pages::message(
                "",
                "Temporary Access Pass deleted",
                "Your Temporary Access Pass was deleted. You signed in with it, so you have been signed out.",
                false,
            );
            return Ok(with_cookie(
                page(StatusCode::OK, markup),
                Some(cleared_session_cookie(&state)),
            ));
        }
        Ok(redirect("/security-info?deleted=tap"))
    }
    .await;
    result.unwrap_or_else(|f| failure_page(&state, f))
}

async fn sign_out(
    State(state): State<WebState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let result = async {
        let ctx = Ctx::new(&state, headers, peer).await?;
        let Some(current) = &ctx.current else {
            return Ok(redirect("/"));
        };
        ctx.check_forgery(&state, form.csrf.as_deref())?;
        state.sign_out(current, &ctx.source).await?;
        let markup = pages::message("", "Signed out", "You have signed out.", false);
        Ok(with_cookie(
            page(StatusCode::OK, markup),
            Some(cleared_session_cookie(&state)),
        ))
    }
    .await;
    result.unwrap_or_else(|f| failure_page(&state, f))
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
