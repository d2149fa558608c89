//! How the site answers: a page, a redirect, a cookie, and the one mapping of failures to
//! responses per response kind: [`PageFailure`] for the HTML pages, [`JsonFailure`] for the
//! WebAuthn script. Visitors never see internal detail; it goes to the log.
//!
//! May depend on: axum, maud, `signin` (its `Failure` and `Refusal`), `logging`, the sibling
//! modules.

use axum::http::header::{LOCATION, RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use maud::Markup;
use serde_json::json;

use super::pages;
use super::signin::{Current, Refusal, SignedIn};
use super::Failure;
use crate::logging::ErrorChain;

/// A page with its status.
pub fn page(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// `response` with `cookie` (a whole `Set-Cookie` value) appended, when there is one.
pub fn with_cookie(mut response: Response, cookie: Option<String>) -> Response {
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

/// A `303 See Other` to `to`.
pub fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// Marks a response that ends the visitor's session: the site's response layer, which knows
/// the cookie's name, clears the session cookie on it.
#[derive(Clone, Copy, Debug)]
pub struct ClearSession;

/// `response`, clearing the session cookie.
pub fn signed_out(mut response: Response) -> Response {
    response.extensions_mut().insert(ClearSession);
    response
}

/// Where a fresh session goes first.
pub fn landing(signed_in: &SignedIn) -> &'static str {
    if signed_in.session.auth_method == crate::model::WebAuthMethod::PasswordPendingSecondFactor {
        "/sign-in/verify"
    } else if signed_in.session.interrupt_mode {
        "/register"
    } else {
        "/security-info"
    }
}

/// Where a visitor with a session belongs: the second-factor prompt while it is owed, the
/// interrupt wizard in interrupt mode, else the security info page.
pub fn home_of(current: &Current) -> &'static str {
    if current.is_pending() {
        "/sign-in/verify"
    } else if current.session().interrupt_mode {
        "/register"
    } else {
        "/security-info"
    }
}

/// The status a refusal is answered with (and `Retry-After` when throttled).
pub fn refusal_status(refusal: &Refusal) -> (StatusCode, Option<HeaderValue>) {
    match refusal {
        Refusal::Throttled(t) => (
            StatusCode::TOO_MANY_REQUESTS,
            HeaderValue::from_str(&t.retry_after.num_seconds().max(1).to_string()).ok(),
        ),
        _ => (StatusCode::UNAUTHORIZED, None),
    }
}

/// A page shown for a refused sign-in, with the refusal's status.
pub fn refused_page(refusal: &Refusal, markup: Markup) -> Response {
    let (status, retry) = refusal_status(refusal);
    let mut response = page(status, markup);
    if let Some(retry) = retry {
        response.headers_mut().insert(RETRY_AFTER, retry);
    }
    response
}

/// A page request that is not answered with the page asked for.
#[derive(Debug)]
pub enum PageFailure {
    /// The request failed: one status and message page per kind of failure.
    Failed(Failure),
    /// The visitor does not belong on this page (signed in already, or not yet); sent there.
    Elsewhere(&'static str),
}

impl From<Failure> for PageFailure {
    fn from(failure: Failure) -> Self {
        PageFailure::Failed(failure)
    }
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    page(status, pages::message("", title, text, true))
}

fn with_retry_after(mut response: Response, seconds: &'static str) -> Response {
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(seconds));
    response
}

/// Logs what a failure's answer does not show the visitor: an unavailable service or an
/// internal error, with its whole cause chain down to the driver's error.
fn log_hidden(failure: &Failure) {
    match failure {
        Failure::Unavailable(cause) => {
            log::error!("web: service unavailable: {}", ErrorChain(cause));
        }
        Failure::Internal(cause) => log::error!("web: internal error: {}", ErrorChain(cause)),
        _ => {}
    }
}

/// The one mapping of failures to pages.
impl IntoResponse for PageFailure {
    fn into_response(self) -> Response {
        let failure = match self {
            PageFailure::Elsewhere(to) => return redirect(to),
            PageFailure::Failed(failure) => failure,
        };
        log_hidden(&failure);
        match failure {
            Failure::SignInRequired => signed_out(redirect("/")),
            Failure::BadRequest(message) => {
                message_page(StatusCode::BAD_REQUEST, "Something's not right", &message)
            }
            Failure::Forbidden(message) => {
                message_page(StatusCode::FORBIDDEN, "That didn't work", &message)
            }
            Failure::TooManyRequests(message) => with_retry_after(
                message_page(StatusCode::TOO_MANY_REQUESTS, "Too many requests", &message),
                "60",
            ),
            Failure::Busy => with_retry_after(
                message_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Too busy",
                    "Too many people are signing in right now. Try again in a few seconds.",
                ),
                "2",
            ),
            Failure::Unavailable(_) => {
                message_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service unavailable",
                    "Sign-in can't reach the directory or its database right now. Try again in a minute.",
                )
            }
            Failure::Internal(_) => {
                message_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "Something went wrong on our side. Try again.",
                )
            }
        }
    }
}

/// A failed request of the WebAuthn script.
#[derive(Debug)]
pub struct JsonFailure(pub Failure);

impl From<Failure> for JsonFailure {
    fn from(failure: Failure) -> Self {
        JsonFailure(failure)
    }
}

/// The same mapping for the WebAuthn script: `{"error": …}` with the status.
impl IntoResponse for JsonFailure {
    fn into_response(self) -> Response {
        log_hidden(&self.0);
        let (status, message) = match self.0 {
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
            Failure::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is unavailable right now. Try again in a minute.".to_owned(),
            ),
            Failure::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side. Try again.".to_owned(),
            ),
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}
