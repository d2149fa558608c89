//! Session ids, cookies and request-forgery checks.
//!
//! A session id is 256 random bits from the OS CSPRNG, base64url in the cookie; the store keeps
//! only its SHA-256. Cookies are `__Host-` prefixed, `Secure; HttpOnly; SameSite=Strict;
//! Path=/` — except on a plain-HTTP loopback site, where browsers would drop `Secure` cookies,
//! so the prefix and `Secure` are left off there (and only there).
//!
//! Every state-changing request carries a CSRF token (a form field or the `X-CSRF-Token`
//! header): the session's own token once signed in, before that the value of a separate
//! random cookie (double submit; the `__Host-` prefix stops a sibling host from planting it).
//! On top, a browser's `Origin` must be the site's own origin, and without `Origin` a
//! `Sec-Fetch-Site` other than `same-origin`/`none` is refused (OWASP: Fetch Metadata plus
//! origin verification, SameSite only as defence in depth).
//!
//! The session id itself (its randomness, its hash, the lifetimes) belongs to the sign-in
//! service ([`crate::signin::session`]); this module only carries it in cookies.
//!
//! May depend on: `signin::session`, `config::PublicUrl`, http headers, subtle.

use axum::http::header::{COOKIE, ORIGIN};
use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::PublicUrl;
use crate::model::Timestamp;

pub use crate::signin::session::{
    hash_id, is_token, random_token, CEREMONY_LIFETIME, REGISTRATION_WINDOW, SECOND_FACTOR_WINDOW,
    SESSION_LIFETIME,
};

/// The header script requests carry their CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Cookie names in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieNames {
    /// The session cookie.
    pub session: &'static str,
    /// The pre-sign-in CSRF cookie.
    pub csrf: &'static str,
}

/// The cookie names: `__Host-` prefixed when cookies are `Secure`.
pub fn cookie_names(secure: bool) -> CookieNames {
    if secure {
        CookieNames {
            session: "__Host-tapd-session",
            csrf: "__Host-tapd-csrf",
        }
    } else {
        CookieNames {
            session: "tapd-session",
            csrf: "tapd-csrf",
        }
    }
}

/// Whether two tokens are equal, in time independent of where they differ.
pub fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of cookie `name` in the request, if present once or more (the first wins).
pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

/// A `Set-Cookie` value; `expires` (when given) becomes `Max-Age` counted from `now`.
pub fn set_cookie(
    name: &str,
    value: &str,
    secure: bool,
    expires: Option<Timestamp>,
    now: Timestamp,
) -> String {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        cookie.push_str("; Secure");
    }
    if let Some(expires) = expires {
        let seconds = (expires - now).num_seconds().max(0);
        cookie.push_str(&format!("; Max-Age={seconds}"));
    }
    cookie
}

/// A `Set-Cookie` value that removes cookie `name`.
pub fn clear_cookie(name: &str, secure: bool) -> String {
    let mut cookie = format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// Whether a state-changing request may come from where it says it comes from: a present
/// `Origin` must be the site's origin; without one, `Sec-Fetch-Site` (when sent) must be
/// `same-origin` or `none`; `Origin: null` passes only with `Sec-Fetch-Site: same-origin`.
/// Requests with neither header (non-browser clients) pass here and still need their CSRF
/// token.
pub fn origin_allowed(headers: &HeaderMap, public_url: &PublicUrl) -> bool {
    let fetch_site = headers.get("sec-fetch-site").map(|v| v.to_str());
    match headers.get(ORIGIN).map(|v| v.to_str()) {
        // Browsers send `Origin: null` under some referrer policies and for opaque origins;
        // then only Fetch Metadata can say the request comes from our own page.
        Some(Ok("null")) => {
            matches!(fetch_site, Some(Ok(site)) if site.eq_ignore_ascii_case("same-origin"))
        }
        Some(Ok(origin)) => origin.eq_ignore_ascii_case(public_url.as_str()),
        Some(Err(_)) => false,
        None => match fetch_site {
            None => true,
            Some(Ok(site)) => {
                site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none")
            }
            Some(Err(_)) => false,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_are_random_256_bit_and_hash_to_hex() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert!(is_token(&a) && is_token(&b));
        assert!(!is_token("short") && !is_token(&format!("{}!", &a[..42])));
        let h = hash_id(&a);
        assert_eq!(h.len(), 64);
        assert!(h
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(
            hash_id("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(tokens_match(&a, &a.clone()) && !tokens_match(&a, &b) && !tokens_match(&a, "x"));
    }

    #[test]
    fn cookies_are_host_prefixed_and_strict_unless_plain_http() {
        let now: Timestamp = "2026-11-27T09:00:00Z".parse().unwrap();
        let names = cookie_names(true);
        assert_eq!(names.session, "__Host-tapd-session");
        let c = set_cookie(
            names.session,
            "v",
            true,
            Some(now + chrono::Duration::minutes(5)),
            now,
        );
        assert_eq!(
            c,
            "__Host-tapd-session=v; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age=300"
        );
        let plain = set_cookie(cookie_names(false).session, "v", false, None, now);
        assert_eq!(plain, "tapd-session=v; Path=/; HttpOnly; SameSite=Strict");
        assert!(clear_cookie("__Host-tapd-session", true).contains("Max-Age=0"));

        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=1; __Host-tapd-session=abc"),
        );
        headers.append(COOKIE, HeaderValue::from_static("tapd-csrf=xyz"));
        assert_eq!(
            read_cookie(&headers, "__Host-tapd-session").as_deref(),
            Some("abc")
        );
        assert_eq!(read_cookie(&headers, "tapd-csrf").as_deref(), Some("xyz"));
        assert_eq!(read_cookie(&headers, "tapd-session"), None);
    }

    #[test]
    fn origin_and_fetch_metadata_checks() {
        let url = PublicUrl::parse("https://tap.example.org").unwrap();
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            origin_allowed(&h, &url)
        };
        assert!(with(&[("origin", "https://tap.example.org")]));
        assert!(!with(&[("origin", "https://evil.example")]));
        assert!(!with(&[("origin", "null")]));
        assert!(!with(&[
            ("origin", "null"),
            ("sec-fetch-site", "cross-site")
        ]));
        assert!(with(&[
            ("origin", "null"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(with(&[("sec-fetch-site", "same-origin")]));
        assert!(!with(&[("sec-fetch-site", "cross-site")]));
        assert!(!with(&[("sec-fetch-site", "same-site")]));
        assert!(with(&[]));
    }
}
