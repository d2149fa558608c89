//! Authenticator apps: time-based one-time passwords (RFC 6238 over RFC 4226 HOTP) with the
//! parameters every app understands (HMAC-SHA-1, 6 digits, 30-second steps), the `otpauth://`
//! URI apps scan, and its QR code as inline SVG.
//!
//! Pure functions with time as a parameter. A code is accepted for the current step and one
//! step either side (RFC 6238 §5.2 allows for clock drift and typing delay), and only for a step
//! later than the last one accepted, so each code works once (NIST SP 800-63B §5.1.4.2).
//!
//! [`accept_code`] applies that rule to a user's stored apps (the web's second step and the
//! RADIUS second factor share it): the accepted step is swapped in with a conditional update,
//! so of two concurrent uses of one code exactly one wins.
//!
//! May depend on: `model` (timestamps, methods), `store` (the trait, for [`accept_code`]),
//! hmac/sha1, qrcode, rand.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use zeroize::Zeroizing;

use crate::model::Timestamp;

/// Digits of a code.
pub const DIGITS: usize = 6;
/// Seconds per time step.
pub const PERIOD_SECONDS: i64 = 30;
/// Bytes of a new secret (160 bits, RFC 4226 §4's recommendation).
pub const SECRET_BYTES: usize = 20;
/// Steps accepted either side of the current one.
pub const DRIFT_STEPS: i64 = 1;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    /// A stored secret is not valid base32.
    #[error("stored authenticator secret is not valid base32")]
    BadSecret,
    /// The QR code could not be built (data too long for any QR version).
    #[error("could not draw the QR code: {0}")]
    QrCode(String),
}

/// A fresh random secret from the OS CSPRNG.
pub fn generate_secret() -> Zeroizing<Vec<u8>> {
    let mut secret = Zeroizing::new(vec![0u8; SECRET_BYTES]);
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding, as authenticator apps expect in `secret=`.
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes base32, ignoring case, spaces and `=` padding; `None` on any other character.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !matches!(c, b' ' | b'=')) {
        let value = BASE32.iter().position(|&b| b == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// The time step `now` falls in.
pub fn step_at(now: Timestamp) -> i64 {
    now.timestamp().div_euclid(PERIOD_SECONDS)
}

/// The HOTP value (RFC 4226 §5.3) of `secret` at `counter`, as `DIGITS` decimal digits.
pub fn code_at_step(secret: &[u8], step: i64) -> String {
    // HMAC accepts keys of any length, so this can't fail.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let binary = (u32::from(digest[offset] & 0x7f) << 24)
        | (u32::from(digest[offset + 1]) << 16)
        | (u32::from(digest[offset + 2]) << 8)
        | u32::from(digest[offset + 3]);
    format!("{:06}", binary % 1_000_000)
}

/// The step whose code `typed` is, if it is the code of a step within [`DRIFT_STEPS`] of `now`
/// and later than `last_used_step`. Spaces in what the user typed are ignored; the comparison
/// does not stop early.
pub fn verify(
    secret: &[u8],
    typed: &str,
    now: Timestamp,
    last_used_step: Option<i64>,
) -> Option<i64> {
    match classify(secret, typed, now, last_used_step) {
        CodeMatch::Fresh(step) => Some(step),
        CodeMatch::Used | CodeMatch::NoMatch => None,
    }
}

/// What a typed code is, for one secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeMatch {
    /// The code of this step, within the window and later than the last one accepted.
    Fresh(i64),
    /// The code of a step within the window that was already used (or is older than one
    /// that was): a replay.
    Used,
    /// Not the code of any step within the window (or not six digits).
    NoMatch,
}

/// Whether `typed` is a fresh code, a used one or neither ([`verify`] is this, without the
/// difference between the last two).
pub fn classify(
    secret: &[u8],
    typed: &str,
    now: Timestamp,
    last_used_step: Option<i64>,
) -> CodeMatch {
    let typed: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    if !looks_like_code(&typed) {
        return CodeMatch::NoMatch;
    }
    let current = step_at(now);
    let mut fresh = None;
    let mut used = false;
    for step in (current - DRIFT_STEPS)..=(current + DRIFT_STEPS) {
        let expected = code_at_step(secret, step);
        let equal: bool =
            subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), typed.as_bytes()).into();
        if !equal {
            continue;
        }
        if last_used_step.is_none_or(|last| step > last) {
            if fresh.is_none() {
                fresh = Some(step);
            }
        } else {
            used = true;
        }
    }
    match (fresh, used) {
        (Some(step), _) => CodeMatch::Fresh(step),
        (None, true) => CodeMatch::Used,
        (None, false) => CodeMatch::NoMatch,
    }
}

/// Whether `typed` (spaces ignored) has the shape of a code: [`DIGITS`] ASCII digits.
pub fn looks_like_code(typed: &str) -> bool {
    let mut digits = 0;
    for c in typed.chars().filter(|c| !c.is_whitespace()) {
        if !c.is_ascii_digit() {
            return false;
        }
        digits += 1;
    }
    digits == DIGITS
}

/// What [`accept_code`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppCode {
    /// A fresh code of one of the user's apps; it is now marked used.
    Accepted,
    /// A code of one of the user's apps that was used already (or lost the race to a
    /// concurrent use of the same code).
    Replayed,
    /// Not a current code of any of the user's apps.
    Invalid,
    /// The user has no authenticator app.
    NoApp,
}

/// Checks `code` against every authenticator app `user_id` registered and marks a fresh code
/// used (the accepted step swapped in atomically, so each code works once, whichever channel
/// presents it). An app whose stored data can't be read is logged and skipped.
pub async fn accept_code(
    store: &dyn crate::store::Store,
    user_id: &str,
    code: &str,
    now: Timestamp,
) -> Result<AppCode, crate::store::StoreError> {
    let mut found = AppCode::NoApp;
    for method in store.methods(user_id).await? {
        if method.kind != crate::model::MethodKind::SoftwareOath {
            continue;
        }
        if found == AppCode::NoApp {
            found = AppCode::Invalid;
        }
        let Some((mut stored, secret)) = read_app(&method) else {
            continue;
        };
        match classify(&secret, code, now, stored.last_used_step) {
            CodeMatch::Fresh(step) => {
                stored.last_used_step = Some(step);
                let Ok(updated) = serde_json::to_string(&stored) else {
                    continue;
                };
                // Only one of two concurrent uses of the same code wins the swap.
                return Ok(
                    if store
                        .swap_method_data(&method.id, &method.data, &updated)
                        .await?
                    {
                        AppCode::Accepted
                    } else {
                        AppCode::Replayed
                    },
                );
            }
            CodeMatch::Used => found = AppCode::Replayed,
            CodeMatch::NoMatch => {}
        }
    }
    Ok(found)
}

/// Whether `user_id` has at least one authenticator app.
pub async fn has_app(
    store: &dyn crate::store::Store,
    user_id: &str,
) -> Result<bool, crate::store::StoreError> {
    Ok(store
        .methods(user_id)
        .await?
        .iter()
        .any(|m| m.kind == crate::model::MethodKind::SoftwareOath))
}

fn read_app(method: &crate::model::RegisteredMethod) -> Option<(StoredTotp, Zeroizing<Vec<u8>>)> {
    let stored = match serde_json::from_str::<StoredTotp>(&method.data) {
        Ok(stored) => stored,
        Err(e) => {
            log::error!("authenticator app {} is unreadable: {e}", method.id);
            return None;
        }
    };
    match stored.secret_bytes() {
        Ok(secret) => Some((stored, secret)),
        Err(e) => {
            log::error!("authenticator app {} is unreadable: {e}", method.id);
            None
        }
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The key URI authenticator apps import:
/// `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=ISSUER&algorithm=SHA1&digits=6&period=30`.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={PERIOD_SECONDS}",
        percent_encode(issuer),
        percent_encode(account),
        base32_encode(secret),
        percent_encode(issuer),
    )
}

/// The QR code of `data` as a standalone SVG element (dark modules on white, quiet zone
/// included), sized by CSS.
pub fn qr_svg(data: &str) -> Result<String, TotpError> {
    let code = qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| TotpError::QrCode(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .quiet_zone(true)
        .build())
}

/// What the store keeps for an authenticator app (`RegisteredMethod::data`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredTotp {
    /// The shared secret, base32.
    pub secret: String,
    /// The last step whose code was accepted; codes of this or earlier steps are refused.
    pub last_used_step: Option<i64>,
}

impl StoredTotp {
    /// The secret's bytes.
    pub fn secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>, TotpError> {
        base32_decode(&self.secret)
            .map(Zeroizing::new)
            .ok_or(TotpError::BadSecret)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use chrono::DateTime;

    fn at(secs: i64) -> Timestamp {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    /// RFC 6238 Appendix B, SHA-1 column, last six of the eight digits.
    #[test]
    fn rfc6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, eight_digits) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(
                code_at_step(secret, step_at(at(time))),
                eight_digits[2..],
                "T={time}"
            );
        }
    }

    #[test]
    fn base32_roundtrips_and_matches_rfc4648() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_encode(b"f"), "MY");
        assert_eq!(base32_decode("mzxw6ytboi").unwrap(), b"foobar");
        assert_eq!(base32_decode("MZXW 6YTB OI==").unwrap(), b"foobar");
        assert!(base32_decode("MZ1").is_none());
        let secret = generate_secret();
        assert_eq!(base32_decode(&base32_encode(&secret)).unwrap(), *secret);
    }

    #[test]
    fn codes_are_accepted_within_one_step_and_only_once() {
        let secret = b"12345678901234567890";
        let now = at(1_111_111_111);
        let current = step_at(now);
        let code = code_at_step(secret, current);
        assert_eq!(verify(secret, &code, now, None), Some(current));
        assert_eq!(
            verify(secret, &format!("{} {}", &code[..3], &code[3..]), now, None),
            Some(current)
        );
        // Once used, the same code (same step) is refused.
        assert_eq!(verify(secret, &code, now, Some(current)), None);
        // One step of drift either way is accepted, two are not.
        let previous = code_at_step(secret, current - 1);
        assert_eq!(verify(secret, &previous, now, None), Some(current - 1));
        assert_eq!(verify(secret, &previous, now, Some(current - 1)), None);
        let old = code_at_step(secret, current - 2);
        assert_eq!(verify(secret, &old, now, None), None);
        let next = code_at_step(secret, current + 1);
        assert_eq!(verify(secret, &next, now, Some(current)), Some(current + 1));
        assert_eq!(verify(secret, "12345", now, None), None);
        assert_eq!(verify(secret, "abcdef", now, None), None);
    }

    #[test]
    fn otpauth_uri_and_qr_code() {
        let uri = otpauth_uri("tapd localhost", "alice@example.org", b"foobar");
        assert_eq!(
            uri,
            "otpauth://totp/tapd%20localhost:alice%40example.org?secret=MZXW6YTBOI&issuer=tapd%20localhost&algorithm=SHA1&digits=6&period=30"
        );
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    }
}
