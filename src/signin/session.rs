//! Session ids and the lifetimes of what a web sign-in opens: a session id is 256 random bits
//! from the OS CSPRNG, base64url; the store keeps only its SHA-256. Carrying the id in a cookie
//! is the web's business (`web::session`).
//!
//! May depend on: sha2, rand.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// How long a fully signed-in session lasts at most.
pub const SESSION_LIFETIME: chrono::Duration = chrono::Duration::hours(1);
/// How long a user has to present a second factor after the password.
pub const SECOND_FACTOR_WINDOW: chrono::Duration = chrono::Duration::minutes(10);
/// The registration window of DESIGN §2.
pub const REGISTRATION_WINDOW: chrono::Duration = chrono::Duration::minutes(10);
/// How long a started ceremony (passkey challenge, authenticator-app secret) stays valid.
pub const CEREMONY_LIFETIME: chrono::Duration = chrono::Duration::minutes(5);

/// 256 random bits, base64url without padding (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `text` looks like something [`random_token`] produced (so junk cookies are ignored
/// before they reach the store).
pub fn is_token(text: &str) -> bool {
    text.len() == 43
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Lower-case hex SHA-256 of a session id: what the store keys sessions by.
pub fn hash_id(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}
