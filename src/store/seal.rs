//! Secrets at rest: the seeds of authenticator apps (TOTP) are sealed with AES-256-GCM before
//! they reach a store row, so a copy of the database (a backup, a `pg_dump`, a stolen disk) is
//! not a second factor for every user.
//!
//! A sealed value reads `sealed:v1:KEYID:BASE64URL(nonce ‖ ciphertext ‖ tag)`: `v1` names this
//! format, `KEYID` the key (the first 4 bytes of a SHA-256 over the key, in hex), so that a
//! store sealed under another key is named as such instead of failing as garbage, and a key can
//! be rotated: rows sealed under the previous key are opened with it and sealed again under the
//! current one when the store is opened (see `[store] secrets_previous_key_file`). The nonce is
//! 96 random bits per seal. The associated data binds the value to its row (user id and method
//! id, or the ceremony id), so a sealed seed copied into another user's row does not open.
//!
//! May depend on: `model` and the store's error type. The key file itself is read by `config`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use sha2::Digest;
use zeroize::Zeroizing;

use crate::model::{CeremonyKind, MethodKind, RegisteredMethod, WebCeremony};
use crate::store::{ClaimedCode, StoreError, UndeliverableCode};

/// Bytes of a secrets key.
pub const KEY_BYTES: usize = 32;
/// Bytes of a nonce (AES-GCM's standard 96 bits).
const NONCE_BYTES: usize = 12;
/// What every sealed value starts with.
const PREFIX: &str = "sealed:v1:";

/// Why a sealed value could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The value was sealed under a key this tapd does not have.
    #[error(
        "it was sealed under secrets key {found}, but store.secrets_key_file holds key {current} \
         (a wrong or regenerated key file? during a rotation, set store.secrets_previous_key_file \
         to the old key)"
    )]
    UnknownKey {
        /// Key id in the value.
        found: String,
        /// Key id of the configured key.
        current: String,
    },
    /// The key is right but the value does not authenticate: altered, or moved from another
    /// row.
    #[error("it does not authenticate: the value was altered or copied from another row")]
    Tampered,
    /// Not in the sealed format at all.
    #[error("it is not a well-formed sealed value")]
    Malformed,
}

/// One AES-256-GCM key and its id.
struct SealingKey {
    id: String,
    cipher: Aes256Gcm,
    /// The audit-checkpoint signing key derived from this key ([`checkpoint_key`]).
    checkpoint: Zeroizing<[u8; KEY_BYTES]>,
}

impl SealingKey {
    fn new(key: &[u8; KEY_BYTES]) -> SealingKey {
        SealingKey {
            id: key_id(key),
            cipher: Aes256Gcm::new(&(*key).into()),
            checkpoint: checkpoint_key(key),
        }
    }
}

/// The HMAC-SHA256 key that signs audit retention checkpoints, derived from the secrets key
/// (HMAC-SHA256 keyed with the secrets key over a fixed label), so the secrets key itself
/// never signs anything and a checkpoint can't be signed without it.
fn checkpoint_key(key: &[u8; KEY_BYTES]) -> Zeroizing<[u8; KEY_BYTES]> {
    let mac = checkpoint_mac(key, b"tapd audit checkpoint key v1");
    Zeroizing::new(hmac::Mac::finalize(mac).into_bytes().into())
}

fn checkpoint_mac(key: &[u8; KEY_BYTES], message: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    #[allow(clippy::expect_used)] // HMAC takes a key of any length.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC key");
    mac.update(message);
    mac
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The id written into every value sealed under `key`: it names the key without revealing it.
pub fn key_id(key: &[u8; KEY_BYTES]) -> String {
    let digest = sha2::Sha256::new()
        .chain_update(b"tapd secrets key id\0")
        .chain_update(key)
        .finalize();
    super::chain::hex(&digest[..4])
}

/// Seals and opens the store's secrets with the configured key (and, during a rotation, opens
/// with the previous one).
pub struct Sealer {
    current: SealingKey,
    previous: Option<SealingKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.current.id)
            .field("previous_key_id", &self.previous.as_ref().map(|k| &k.id))
            .finish()
    }
}

impl Sealer {
    /// A sealer with `current` for sealing and opening, and `previous` for opening only.
    pub fn new(current: &[u8; KEY_BYTES], previous: Option<&[u8; KEY_BYTES]>) -> Sealer {
        Sealer {
            current: SealingKey::new(current),
            previous: previous.map(SealingKey::new),
        }
    }

    /// The id of the key new values are sealed under.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Signs `message` (an audit checkpoint's canonical encoding) with the checkpoint key
    /// derived from the current key: the key id and the HMAC-SHA256 in hex.
    pub fn sign_checkpoint(&self, message: &[u8]) -> (String, String) {
        let tag = hmac::Mac::finalize(checkpoint_mac(&self.current.checkpoint, message));
        (
            self.current.id.clone(),
            super::chain::hex(&tag.into_bytes()),
        )
    }

    /// Whether `mac` (hex) is the signature of `message` under the checkpoint key derived from
    /// the key `key_id` names (the current one, or the previous one during a rotation);
    /// compared in constant time.
    pub fn checkpoint_signature_holds(&self, message: &[u8], key_id: &str, mac: &str) -> bool {
        let Some(key) = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|key| key.id == key_id)
        else {
            return false;
        };
        let Some(tag) = decode_hex(mac) else {
            return false;
        };
        hmac::Mac::verify_slice(checkpoint_mac(&key.checkpoint, message), &tag).is_ok()
    }

    /// Seals `plaintext`, bound to `row` (the associated data).
    pub fn seal(&self, plaintext: &str, row: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: row,
        };
        // AES-GCM encryption fails only for a message over 64 GiB.
        #[allow(clippy::expect_used)]
        let sealed = self
            .current
            .cipher
            .encrypt(&Nonce::from(nonce), payload)
            .expect("AES-GCM seals any message under 64 GiB");
        let mut bytes = Vec::with_capacity(NONCE_BYTES + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!(
            "{PREFIX}{}:{}",
            self.current.id,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// Opens what [`Sealer::seal`] produced for the same `row`.
    pub fn open(&self, stored: &str, row: &[u8]) -> Result<Zeroizing<String>, SealError> {
        let rest = stored.strip_prefix(PREFIX).ok_or(SealError::Malformed)?;
        let (id, body) = rest.split_once(':').ok_or(SealError::Malformed)?;
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|key| key.id == id)
            .ok_or_else(|| SealError::UnknownKey {
                found: id.to_owned(),
                current: self.current.id.clone(),
            })?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_BYTES {
            return Err(SealError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let plain = Zeroizing::new(
            key.cipher
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: sealed,
                        aad: row,
                    },
                )
                .map_err(|_| SealError::Tampered)?,
        );
        String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| SealError::Malformed)
    }

    /// Whether a stored value must be (re)sealed at open: it is in clear, or sealed under the
    /// previous key.
    pub fn needs_sealing(&self, stored: &str) -> bool {
        match stored
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
        {
            Some((id, _)) => id != self.current.id,
            None => true,
        }
    }
}

/// Whether a value is in the sealed format.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// Whether a method's data is a secret the store seals (an authenticator app's seed; a
/// passkey's public key is not a secret).
pub(crate) fn method_is_secret(kind: MethodKind) -> bool {
    kind == MethodKind::SoftwareOath
}

/// Whether a ceremony's state holds a secret (an authenticator-app seed not yet confirmed).
pub(crate) fn ceremony_is_secret(kind: CeremonyKind) -> bool {
    kind == CeremonyKind::TotpEnrolment
}

/// The associated data of a method row.
pub(crate) fn method_row(user_id: &str, method_id: &str) -> Vec<u8> {
    format!("tapd method\0{user_id}\0{method_id}").into_bytes()
}

/// The associated data of an outbox row's sealed code.
pub(crate) fn outbox_row(mail_id: &str) -> Vec<u8> {
    format!("tapd outbox\0{mail_id}").into_bytes()
}

/// The code of the outbox message `mail_id` as stored (`sealed`), opened; or why it can't be,
/// so that the message is failed rather than tried again forever.
pub(crate) fn open_outbox_code(
    sealer: &Sealer,
    mail_id: &str,
    sealed: Option<&str>,
) -> ClaimedCode {
    let sealed = sealed.ok_or(UndeliverableCode::Missing)?;
    sealer
        .open(sealed, &outbox_row(mail_id))
        .map_err(UndeliverableCode::Unopenable)
}

/// The associated data of a web ceremony's sealed state.
pub(crate) fn ceremony_row(ceremony_id: &str) -> Vec<u8> {
    format!("tapd ceremony\0{ceremony_id}").into_bytes()
}

/// What the store writes for a method's `data`: sealed when it is a secret and a key is set.
pub(crate) fn seal_method_data(
    sealer: Option<&Sealer>,
    kind: MethodKind,
    user_id: &str,
    method_id: &str,
    data: &str,
) -> String {
    match sealer {
        Some(sealer) if method_is_secret(kind) => {
            sealer.seal(data, &method_row(user_id, method_id))
        }
        _ => data.to_owned(),
    }
}

/// A method's `data` as stored, opened.
pub(crate) fn open_method_data(
    sealer: Option<&Sealer>,
    user_id: &str,
    method_id: &str,
    stored: &str,
) -> Result<String, StoreError> {
    if !is_sealed(stored) {
        return Ok(stored.to_owned());
    }
    let Some(sealer) = sealer else {
        return Err(StoreError::corrupt(format!(
            "method {method_id} holds a sealed secret, but this store was opened without a secrets key"
        )));
    };
    sealer
        .open(stored, &method_row(user_id, method_id))
        .map(|plain| plain.to_string())
        .map_err(|err| {
            StoreError::corrupt_from(
                format!(
                "the sealed secret of method {method_id} (user {user_id}) can't be opened: {err}"
            ),
                err,
            )
        })
}

/// Opens a method read from the store in place.
pub(crate) fn open_method(
    sealer: Option<&Sealer>,
    method: &mut RegisteredMethod,
) -> Result<(), StoreError> {
    method.data = open_method_data(sealer, &method.user_id, &method.id, &method.data)?;
    Ok(())
}

/// What the store writes for a ceremony's `state`.
pub(crate) fn seal_ceremony_state(sealer: Option<&Sealer>, ceremony: &WebCeremony) -> String {
    match sealer {
        Some(sealer) if ceremony_is_secret(ceremony.kind) => {
            sealer.seal(&ceremony.state, &ceremony_row(&ceremony.id))
        }
        _ => ceremony.state.clone(),
    }
}

/// Opens a ceremony read from the store in place.
pub(crate) fn open_ceremony(
    sealer: Option<&Sealer>,
    ceremony: &mut WebCeremony,
) -> Result<(), StoreError> {
    if !is_sealed(&ceremony.state) {
        return Ok(());
    }
    let Some(sealer) = sealer else {
        return Err(StoreError::corrupt(format!(
            "ceremony {} holds a sealed secret, but this store was opened without a secrets key",
            ceremony.id
        )));
    };
    ceremony.state = sealer
        .open(&ceremony.state, &ceremony_row(&ceremony.id))
        .map_err(|err| {
            StoreError::corrupt_from(
                format!(
                    "the sealed state of ceremony {} can't be opened: {err}",
                    ceremony.id
                ),
                err,
            )
        })?
        .to_string();
    Ok(())
}

/// A row found at open whose secret must be sealed (clear) or sealed again (previous key):
/// its new value, or why it can't be.
pub(crate) fn reseal(
    sealer: &Sealer,
    stored: &str,
    row: &[u8],
    what: &str,
) -> Result<Option<String>, StoreError> {
    if !sealer.needs_sealing(stored) {
        return Ok(None);
    }
    let plain = if is_sealed(stored) {
        sealer.open(stored, row).map_err(|err| {
            StoreError::corrupt_from(
                format!("the sealed secret of {what} can't be opened: {err}"),
                err,
            )
        })?
    } else {
        Zeroizing::new(stored.to_owned())
    };
    Ok(Some(sealer.seal(&plain, row)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const KEY: [u8; KEY_BYTES] = [7; KEY_BYTES];
    const OTHER: [u8; KEY_BYTES] = [9; KEY_BYTES];

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_its_row() {
        let sealer = Sealer::new(&KEY, None);
        let row = method_row("u1", "m1");
        let sealed = sealer.seal("JBSWY3DPEHPK3PXP", &row);
        assert!(sealed.starts_with(&format!("sealed:v1:{}:", key_id(&KEY))));
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_eq!(*sealer.open(&sealed, &row).unwrap(), "JBSWY3DPEHPK3PXP");
        // Random nonce: the same secret seals differently each time.
        assert_ne!(sealer.seal("JBSWY3DPEHPK3PXP", &row), sealed);
        // Moved to another user's row (or another method id): refused.
        assert_eq!(
            sealer.open(&sealed, &method_row("u2", "m1")),
            Err(SealError::Tampered)
        );
        assert_eq!(
            sealer.open(&sealed, &method_row("u1", "m2")),
            Err(SealError::Tampered)
        );
        // A flipped ciphertext bit: refused.
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(sealer.open(&altered, &row), Err(SealError::Tampered));
        // A wrong key is named, not silent garbage.
        let wrong = Sealer::new(&OTHER, None);
        let err = wrong.open(&sealed, &row).unwrap_err();
        assert!(matches!(err, SealError::UnknownKey { .. }));
        assert!(err.to_string().contains(&key_id(&KEY)), "{err}");
        assert!(err.to_string().contains("store.secrets_key_file"), "{err}");
        // A forged key id over the right ciphertext still fails to authenticate.
        let forged = sealed.replace(&key_id(&KEY), &key_id(&OTHER));
        assert_eq!(wrong.open(&forged, &row), Err(SealError::Tampered));
        assert_eq!(sealer.open("sealed:v1:zz", &row), Err(SealError::Malformed));
    }

    #[test]
    fn rotation_opens_with_the_previous_key_and_reseals_under_the_current() {
        let old = Sealer::new(&OTHER, None);
        let row = method_row("u1", "m1");
        let sealed_old = old.seal("secret", &row);
        let rotating = Sealer::new(&KEY, Some(&OTHER));
        assert!(rotating.needs_sealing(&sealed_old));
        assert!(rotating.needs_sealing("{\"secret\":\"clear\"}"));
        let resealed = reseal(&rotating, &sealed_old, &row, "m1").unwrap().unwrap();
        assert!(!rotating.needs_sealing(&resealed));
        assert_eq!(reseal(&rotating, &resealed, &row, "m1").unwrap(), None);
        let after = Sealer::new(&KEY, None);
        assert_eq!(*after.open(&resealed, &row).unwrap(), "secret");
    }
}
