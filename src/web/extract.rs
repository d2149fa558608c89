//! Who is asking, worked out before a handler runs: the visitor extractors look the session
//! cookie up with the sign-in service and find the client's address; [`Checked`] wraps a
//! request body (`Form`, `Json`, or none) with the forgery check every state-changing request
//! passes before anything changes.
//!
//! The visitors: [`AnyVisitor`] (with or without a session), [`AnonymousVisitor`] (no session;
//! one that has a session is sent home), [`PendingVisitor`] (signed in with a password, a second
//! factor still owed), [`SessionVisitor`] (any session), [`SignedInVisitor`] (fully signed in;
//! anyone else must sign in). Those that can be refused on a JSON route take the failure type
//! of their response kind as a parameter.
//!
//! [`Checked`] parses the body first, then finds the visitor, then checks the `Origin` /
//! Fetch Metadata headers and the CSRF token (the form's `csrf` field, or the `X-CSRF-Token`
//! header for script requests) against the session's token, or before sign-in the
//! double-submit cookie's.
//!
//! May depend on: axum, `signin` (the session lookup), the sibling modules.

use std::marker::PhantomData;
use std::net::SocketAddr;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::de::DeserializeOwned;

use super::respond::{JsonFailure, PageFailure};
use super::session::{
    cookie_names, is_token, origin_allowed, random_token, read_cookie, set_cookie, tokens_match,
    CSRF_HEADER,
};
use super::signin::Current;
use super::{Failure, Source, WebState};
use crate::http_listener::ClientAddr;

/// What every visitor extractor reads from a request.
struct Looked {
    current: Option<Current>,
    source: Source,
    pre_sign_in: Option<String>,
}

async fn look(parts: &Parts, state: &WebState) -> Result<Looked, Failure> {
    let names = cookie_names(state.settings().secure_cookies);
    let cookie = read_cookie(&parts.headers, names.session);
    let current = state.signin().current(cookie.as_deref()).await?;
    let peer = parts.extensions.get::<ClientAddr>().map(|ClientAddr(a)| *a);
    let source = source_of(state, &parts.headers, peer);
    let pre_sign_in = read_cookie(&parts.headers, names.csrf).filter(|t| is_token(t));
    Ok(Looked {
        current,
        source,
        pre_sign_in,
    })
}

/// The client address: the socket peer, or, when the peer is a trusted proxy, the first
/// untrusted address of `X-Forwarded-For` from the right ([`super::forwarded_client`]).
fn source_of(state: &WebState, headers: &HeaderMap, peer: Option<SocketAddr>) -> Source {
    let peer = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
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

/// The pre-sign-in CSRF token for a page (the cookie's, when the browser has a well-formed
/// one), and the cookie to set when it has none.
pub fn pre_sign_in_csrf(state: &WebState, existing: Option<String>) -> (String, Option<String>) {
    if let Some(token) = existing {
        return (token, None);
    }
    let token = random_token();
    let secure = state.settings().secure_cookies;
    let cookie = set_cookie(
        cookie_names(secure).csrf,
        &token,
        secure,
        None,
        state.signin().now(),
    );
    (token, Some(cookie))
}

/// A visitor extractor: the token its requests must carry.
pub trait Visit: FromRequestParts<WebState> {
    /// The CSRF token a state-changing request of this visitor must carry, if any can.
    fn expected_token(&self) -> Option<&str>;
}

/// Any visitor, signed in or not.
pub struct AnyVisitor<F = PageFailure> {
    /// The session, when there is a valid one.
    pub current: Option<Current>,
    /// Where the request came from.
    pub source: Source,
    /// The well-formed pre-sign-in CSRF cookie, if the browser sent one.
    pub pre_sign_in: Option<String>,
    kind: PhantomData<fn() -> F>,
}

impl<F: From<Failure> + IntoResponse> FromRequestParts<WebState> for AnyVisitor<F> {
    type Rejection = F;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, F> {
        let looked = look(parts, state).await?;
        Ok(AnyVisitor {
            current: looked.current,
            source: looked.source,
            pre_sign_in: looked.pre_sign_in,
            kind: PhantomData,
        })
    }
}

impl<F: From<Failure> + IntoResponse> Visit for AnyVisitor<F> {
    fn expected_token(&self) -> Option<&str> {
        match &self.current {
            Some(current) => Some(&current.session().csrf_token),
            None => self.pre_sign_in.as_deref(),
        }
    }
}

/// A visitor without a session; one with a session is sent to `/`.
pub struct AnonymousVisitor {
    /// Where the request came from.
    pub source: Source,
    /// The well-formed pre-sign-in CSRF cookie, if the browser sent one.
    pub pre_sign_in: Option<String>,
}

impl FromRequestParts<WebState> for AnonymousVisitor {
    type Rejection = PageFailure;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, PageFailure> {
        let looked = look(parts, state).await?;
        if looked.current.is_some() {
            return Err(PageFailure::Elsewhere("/"));
        }
        Ok(AnonymousVisitor {
            source: looked.source,
            pre_sign_in: looked.pre_sign_in,
        })
    }
}

impl Visit for AnonymousVisitor {
    fn expected_token(&self) -> Option<&str> {
        self.pre_sign_in.as_deref()
    }
}

/// A visitor with a session of either kind; one without is sent to `/`.
pub struct SessionVisitor {
    /// The session.
    pub current: Current,
    /// Where the request came from.
    pub source: Source,
}

impl FromRequestParts<WebState> for SessionVisitor {
    type Rejection = PageFailure;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, PageFailure> {
        let looked = look(parts, state).await?;
        let current = looked.current.ok_or(PageFailure::Elsewhere("/"))?;
        Ok(SessionVisitor {
            current,
            source: looked.source,
        })
    }
}

impl Visit for SessionVisitor {
    fn expected_token(&self) -> Option<&str> {
        Some(&self.current.session().csrf_token)
    }
}

/// A visitor who gave the password and still owes a second factor; anyone else is sent to
/// `/`.
pub struct PendingVisitor {
    /// The pending session.
    pub current: Current,
    /// Where the request came from.
    pub source: Source,
}

impl FromRequestParts<WebState> for PendingVisitor {
    type Rejection = PageFailure;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, PageFailure> {
        let looked = look(parts, state).await?;
        match looked.current {
            Some(current) if current.is_pending() => Ok(PendingVisitor {
                current,
                source: looked.source,
            }),
            _ => Err(PageFailure::Elsewhere("/")),
        }
    }
}

impl Visit for PendingVisitor {
    fn expected_token(&self) -> Option<&str> {
        Some(&self.current.session().csrf_token)
    }
}

/// A fully signed-in visitor; anyone else gets [`Failure::SignInRequired`] in the response
/// kind `F`.
pub struct SignedInVisitor<F = PageFailure> {
    /// The session.
    pub current: Current,
    /// Where the request came from.
    pub source: Source,
    kind: PhantomData<fn() -> F>,
}

impl<F: From<Failure> + IntoResponse> FromRequestParts<WebState> for SignedInVisitor<F> {
    type Rejection = F;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, F> {
        let looked = look(parts, state).await?;
        match looked.current {
            Some(current) if !current.is_pending() => Ok(SignedInVisitor {
                current,
                source: looked.source,
                kind: PhantomData,
            }),
            _ => Err(F::from(Failure::SignInRequired)),
        }
    }
}

impl<F: From<Failure> + IntoResponse> Visit for SignedInVisitor<F> {
    fn expected_token(&self) -> Option<&str> {
        Some(&self.current.session().csrf_token)
    }
}

/// A form that carries its CSRF token in a `csrf` field.
pub trait CsrfField {
    /// The token the form carried.
    fn csrf(&self) -> Option<&str>;
}

/// A request body (`Form<T>`, `Json<T>`, or `()` for none) from visitor `V`, which passed the
/// origin and CSRF checks.
pub struct Checked<B, V> {
    /// The parsed body.
    pub body: B,
    /// Who sent it.
    pub visitor: V,
}

/// The origin headers and the CSRF token, checked before anything changes.
fn check_forgery(
    state: &WebState,
    headers: &HeaderMap,
    expected: Option<&str>,
    token: Option<&str>,
) -> Result<(), Failure> {
    if !origin_allowed(headers, &state.settings().public_url) {
        return Err(Failure::Forbidden(
            "This request came from another site and was refused.".to_owned(),
        ));
    }
    match (expected, token) {
        (Some(expected), Some(token)) if tokens_match(expected, token) => Ok(()),
        _ => Err(Failure::Forbidden(
            "This page has expired or the form was incomplete, so nothing was changed. \
             Go back, reload the page and try again."
                .to_owned(),
        )),
    }
}

/// The CSRF token of a script request (header).
fn header_token(headers: &HeaderMap) -> Option<&str> {
    headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())
}

/// Parses the body with `B`, then finds the visitor in a copy of the request's head.
async fn body_then_visitor<B, V>(req: Request, state: &WebState) -> Result<(B, V, Parts), Response>
where
    B: FromRequest<WebState>,
    V: Visit,
{
    let (parts, body) = req.into_parts();
    let mut head = parts.clone();
    let body = B::from_request(Request::from_parts(parts, body), state)
        .await
        .map_err(IntoResponse::into_response)?;
    let visitor = V::from_request_parts(&mut head, state)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((body, visitor, head))
}

impl<T, V> FromRequest<WebState> for Checked<Form<T>, V>
where
    T: DeserializeOwned + CsrfField + Send,
    V: Visit + Send,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &WebState) -> Result<Self, Response> {
        let (body, visitor, head) = body_then_visitor::<Form<T>, V>(req, state).await?;
        check_forgery(
            state,
            &head.headers,
            visitor.expected_token(),
            body.0.csrf(),
        )
        .map_err(|f| PageFailure::from(f).into_response())?;
        Ok(Checked { body, visitor })
    }
}

impl<T, V> FromRequest<WebState> for Checked<Json<T>, V>
where
    T: DeserializeOwned + Send,
    V: Visit + Send,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &WebState) -> Result<Self, Response> {
        let (body, visitor, head) = body_then_visitor::<Json<T>, V>(req, state).await?;
        let token = header_token(&head.headers);
        check_forgery(state, &head.headers, visitor.expected_token(), token)
            .map_err(|f| JsonFailure::from(f).into_response())?;
        Ok(Checked { body, visitor })
    }
}

impl<V: Visit + Send> FromRequestParts<WebState> for Checked<(), V> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        let visitor = V::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let token = header_token(&parts.headers);
        check_forgery(state, &parts.headers, visitor.expected_token(), token)
            .map_err(|f| JsonFailure::from(f).into_response())?;
        Ok(Checked { body: (), visitor })
    }
}
