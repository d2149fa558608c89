//! Local verification of `userPassword` values, for directory sources that hold the hashes
//! themselves (the LDIF file) instead of answering a bind.
//!
//! Supported: the salted SHA family as `slappasswd` writes it (`{SSHA}`, `{SSHA256}`,
//! `{SSHA512}`: base64 of digest(password ‖ salt) ‖ salt) and `{ARGON2}` as the OpenLDAP
//! `argon2` module writes it (`{ARGON2}$argon2id$v=19$m=…,t=…,p=…$salt$hash`, the PHC form).
//! Digests are compared in constant time. Cleartext values (`{CLEARTEXT}` or no scheme at all)
//! and weaker schemes (`{SHA}`, `{MD5}`, `{CRYPT}`…) are refused rather than trusted: a demo
//! file should not teach storing passwords that way. Nothing here logs or returns a stored
//! value or a password; errors name only the scheme.
//!
//! The `ssha*` and `argon2id*` functions produce values, for tests and for building the demo
//! directory file.
//!
//! May depend on: `sha1`, `sha2`, `base64`, `argon2`, `subtle`, `rand`.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Why a stored `userPassword` value could not be used to verify a password.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordHashError {
    /// The value is stored in clear (`{CLEARTEXT}` or no `{SCHEME}` prefix); tapd refuses it.
    #[error("userPassword stored in clear text is refused; store {{SSHA}} or {{ARGON2}} hashes")]
    Cleartext,
    /// The value uses a scheme tapd does not verify.
    #[error(
        "userPassword scheme {{{scheme}}} is not supported (use SSHA, SSHA256, SSHA512 or ARGON2)"
    )]
    Unsupported {
        /// The scheme name as written between the braces.
        scheme: String,
    },
    /// The value carries a supported scheme but its body can't be decoded.
    #[error("userPassword value with scheme {{{scheme}}} is malformed")]
    Malformed {
        /// The scheme name, upper case.
        scheme: &'static str,
    },
    /// Producing a hash failed (argon2 parameters or salt rejected).
    #[error("could not hash the password: {0}")]
    Hashing(#[source] argon2::password_hash::Error),
}

/// Checks `password` against one stored `userPassword` value.
///
/// `Ok(true)` only for a match; `Ok(false)` for a well-formed value that does not match;
/// `Err` for a value tapd can't or won't verify.
pub fn verify_user_password(stored: &[u8], password: &str) -> Result<bool, PasswordHashError> {
    let (scheme, body) = split_scheme(stored).ok_or(PasswordHashError::Cleartext)?;
    let upper = scheme.to_ascii_uppercase();
    match upper.as_slice() {
        b"SSHA" => verify_salted::<Sha1>("SSHA", body, password),
        b"SSHA256" => verify_salted::<Sha256>("SSHA256", body, password),
        b"SSHA512" => verify_salted::<Sha512>("SSHA512", body, password),
        b"ARGON2" => verify_argon2(body, password),
        b"CLEARTEXT" => Err(PasswordHashError::Cleartext),
        _ => Err(PasswordHashError::Unsupported {
            scheme: String::from_utf8_lossy(scheme).into_owned(),
        }),
    }
}

/// Splits `{SCHEME}body`; `None` when there is no scheme prefix.
fn split_scheme(stored: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = stored.strip_prefix(b"{")?;
    let close = rest.iter().position(|&b| b == b'}')?;
    let scheme = &rest[..close];
    if scheme.is_empty()
        || !scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    {
        return None;
    }
    Some((scheme, &rest[close + 1..]))
}

fn verify_salted<D: Digest>(
    scheme: &'static str,
    body: &[u8],
    password: &str,
) -> Result<bool, PasswordHashError> {
    let malformed = PasswordHashError::Malformed { scheme };
    let decoded = STANDARD.decode(body).map_err(|_| malformed.clone())?;
    let digest_len = <D as Digest>::output_size();
    if decoded.len() <= digest_len {
        return Err(malformed);
    }
    let (expected, salt) = decoded.split_at(digest_len);
    let mut hasher = D::new();
    hasher.update(password.as_bytes());
    hasher.update(salt);
    let actual = hasher.finalize();
    Ok(bool::from(actual.as_slice().ct_eq(expected)))
}

fn verify_argon2(body: &[u8], password: &str) -> Result<bool, PasswordHashError> {
    let malformed = PasswordHashError::Malformed { scheme: "ARGON2" };
    let phc = std::str::from_utf8(body).map_err(|_| malformed.clone())?;
    let parsed = PasswordHash::new(phc).map_err(|_| malformed.clone())?;
    if !parsed.algorithm.as_str().starts_with("argon2")
        || parsed.salt.is_none()
        || parsed.hash.is_none()
    {
        return Err(malformed);
    }
    // The verifier takes algorithm, version and cost from the hash itself and compares the
    // output in constant time.
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(_) => Err(malformed),
    }
}

fn salted<D: Digest>(scheme: &str, password: &str, salt: &[u8]) -> String {
    let mut hasher = D::new();
    hasher.update(password.as_bytes());
    hasher.update(salt);
    let mut raw = hasher.finalize().to_vec();
    raw.extend_from_slice(salt);
    format!("{{{scheme}}}{}", STANDARD.encode(raw))
}

/// `{SSHA}` value (SHA-1 over password ‖ salt), as `slappasswd -h {SSHA}` writes it.
pub fn ssha(password: &str, salt: &[u8]) -> String {
    salted::<Sha1>("SSHA", password, salt)
}

/// `{SSHA256}` value (SHA-256 over password ‖ salt).
pub fn ssha256(password: &str, salt: &[u8]) -> String {
    salted::<Sha256>("SSHA256", password, salt)
}

/// `{SSHA512}` value (SHA-512 over password ‖ salt).
pub fn ssha512(password: &str, salt: &[u8]) -> String {
    salted::<Sha512>("SSHA512", password, salt)
}

/// `{ARGON2}` value with argon2id at m=19 MiB, t=2, p=1 and a random 16-byte salt.
pub fn argon2id(password: &str) -> Result<String, PasswordHashError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2id_with_salt_string(password, &salt)
}

/// `{ARGON2}` value with argon2id at m=19 MiB, t=2, p=1 and the given salt (8–48 bytes);
/// deterministic, for fixtures.
pub fn argon2id_with_salt(password: &str, salt: &[u8]) -> Result<String, PasswordHashError> {
    let salt = SaltString::encode_b64(salt).map_err(PasswordHashError::Hashing)?;
    argon2id_with_salt_string(password, &salt)
}

fn argon2id_with_salt_string(
    password: &str,
    salt: &SaltString,
) -> Result<String, PasswordHashError> {
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), salt)
        .map_err(PasswordHashError::Hashing)?;
    Ok(format!("{{ARGON2}}{hash}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    // Known answers computed independently with Python's hashlib, the way slappasswd does:
    //   base64.b64encode(hashlib.sha1(b"secret" + b"salt").digest() + b"salt"),
    //   and the same with sha256 / sha512.
    const SSHA_SECRET_SALT: &str = "{SSHA}gVK8WC9YyFT1gMsQHTGCgT3sSv5zYWx0";
    const SSHA256_SECRET_SALT: &str = "{SSHA256}+E+iFJ27Yu1ODPH1UNKUmzOmUT06dwfghQJRHHnMsO5zYWx0";
    const SSHA512_SECRET_SALT: &str = "{SSHA512}E491yrR9AdCoE7rbOPYS3EZgSuZpVE65AD9xko08s6floNesY/Zpe9zMVvLix4S2FiQSJ99RIkNvhHomNO9uL3NhbHQ=";

    #[test]
    fn ssha_family_matches_known_answers() {
        assert_eq!(ssha("secret", b"salt"), SSHA_SECRET_SALT);
        assert_eq!(ssha256("secret", b"salt"), SSHA256_SECRET_SALT);
        assert_eq!(ssha512("secret", b"salt"), SSHA512_SECRET_SALT);
        for stored in [SSHA_SECRET_SALT, SSHA256_SECRET_SALT, SSHA512_SECRET_SALT] {
            assert_eq!(verify_user_password(stored.as_bytes(), "secret"), Ok(true));
            assert_eq!(verify_user_password(stored.as_bytes(), "Secret"), Ok(false));
            assert_eq!(verify_user_password(stored.as_bytes(), ""), Ok(false));
        }
    }

    #[test]
    fn scheme_prefix_is_case_insensitive() {
        let lower = SSHA_SECRET_SALT.replace("{SSHA}", "{ssha}");
        assert_eq!(verify_user_password(lower.as_bytes(), "secret"), Ok(true));
    }

    #[test]
    fn ssha_with_random_salt_round_trips() {
        let stored = ssha("pässwörd", &[0, 1, 2, 255, 7, 8, 9, 10]);
        assert_eq!(
            verify_user_password(stored.as_bytes(), "pässwörd"),
            Ok(true)
        );
        assert_eq!(
            verify_user_password(stored.as_bytes(), "passwort"),
            Ok(false)
        );
    }

    #[test]
    fn argon2_in_openldap_module_form() {
        let stored = argon2id_with_salt("secret", b"0123456789abcdef").unwrap();
        assert!(
            stored.starts_with("{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert_eq!(verify_user_password(stored.as_bytes(), "secret"), Ok(true));
        assert_eq!(verify_user_password(stored.as_bytes(), "wrong"), Ok(false));
        let random = argon2id("other").unwrap();
        assert_eq!(verify_user_password(random.as_bytes(), "other"), Ok(true));
    }

    #[test]
    fn argon2_known_answer_from_reference_implementation() {
        // Vectors from the reference implementation's tests (phc-winner-argon2 src/test.c):
        // password "password", salt "somesalt", argon2id, t=2, p=1.
        for stored in [
            "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "{ARGON2}$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
        ] {
            assert_eq!(verify_user_password(stored.as_bytes(), "password"), Ok(true));
            assert_eq!(verify_user_password(stored.as_bytes(), "passwore"), Ok(false));
        }
    }

    #[test]
    fn cleartext_and_unknown_schemes_are_refused() {
        assert_eq!(
            verify_user_password(b"secret", "secret"),
            Err(PasswordHashError::Cleartext)
        );
        assert_eq!(
            verify_user_password(b"{CLEARTEXT}secret", "secret"),
            Err(PasswordHashError::Cleartext)
        );
        assert_eq!(
            verify_user_password(b"{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"),
            Err(PasswordHashError::Unsupported {
                scheme: "SHA".to_owned()
            })
        );
        assert_eq!(
            verify_user_password(b"{CRYPT}$6$abc$def", "secret"),
            Err(PasswordHashError::Unsupported {
                scheme: "CRYPT".to_owned()
            })
        );
    }

    #[test]
    fn malformed_values_are_errors_not_matches() {
        assert_eq!(
            verify_user_password(b"{SSHA}not base64!", "x"),
            Err(PasswordHashError::Malformed { scheme: "SSHA" })
        );
        // Digest without salt is too short for SSHA.
        assert_eq!(
            verify_user_password(b"{SSHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"),
            Err(PasswordHashError::Malformed { scheme: "SSHA" })
        );
        assert_eq!(
            verify_user_password(b"{ARGON2}$argon2id$garbage", "x"),
            Err(PasswordHashError::Malformed { scheme: "ARGON2" })
        );
        assert_eq!(
            verify_user_password(b"{ARGON2}$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA", "x"),
            Err(PasswordHashError::Malformed { scheme: "ARGON2" })
        );
    }

    #[test]
    fn errors_never_echo_the_value() {
        let err = verify_user_password(b"{CLEARTEXT}hunter2", "hunter2").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        let err = verify_user_password(b"{SSHA}hunter2", "x").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }
}
