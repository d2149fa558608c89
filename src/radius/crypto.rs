//! The MD5-based primitives of RADIUS: Message-Authenticator (HMAC-MD5, RFC 3579 §3.2),
//! the Response Authenticator (RFC 2865 §3) and User-Password hiding (RFC 2865 §5.2).
//! Pure functions over byte slices; no other module of tapd.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::HEADER_LEN;

type HmacMd5 = Hmac<Md5>;

/// Length of an MD5 digest, of an authenticator and of a Message-Authenticator value.
pub(crate) const DIGEST_LEN: usize = 16;

fn hmac_md5(secret: &[u8]) -> HmacMd5 {
    #[allow(clippy::expect_used)] // HMAC takes keys of any length; this never fails.
    HmacMd5::new_from_slice(secret).expect("HMAC accepts any key length")
}

/// HMAC-MD5 over `packet` with the 16 octets at `ma_value_offset` taken as zero
/// (RFC 3579 §3.2). For a reply, the header must hold the request authenticator.
pub(crate) fn message_authenticator(
    secret: &[u8],
    packet: &[u8],
    ma_value_offset: usize,
) -> Option<[u8; DIGEST_LEN]> {
    let ma_end = ma_value_offset.checked_add(DIGEST_LEN)?;
    if ma_value_offset < HEADER_LEN || ma_end > packet.len() {
        return None;
    }
    let mut mac = hmac_md5(secret);
    mac.update(packet.get(..ma_value_offset)?);
    mac.update(&[0u8; DIGEST_LEN]);
    mac.update(packet.get(ma_end..)?);
    Some(mac.finalize().into_bytes().into())
}

/// Checks a request's Message-Authenticator in constant time.
pub(crate) fn verify_request_message_authenticator(
    secret: &[u8],
    packet: &[u8],
    ma_value_offset: usize,
) -> bool {
    let Some(expected) = message_authenticator(secret, packet, ma_value_offset) else {
        return false;
    };
    let Some(received) = packet.get(ma_value_offset..ma_value_offset + DIGEST_LEN) else {
        return false;
    };
    expected.ct_eq(received).into()
}

/// Response Authenticator = MD5(Code + ID + Length + RequestAuth + Attributes + Secret).
pub(crate) fn response_authenticator(
    reply: &[u8],
    request_authenticator: &[u8; DIGEST_LEN],
    secret: &[u8],
) -> Option<[u8; DIGEST_LEN]> {
    let mut md5 = Md5::new();
    md5.update(reply.get(..4)?);
    md5.update(request_authenticator);
    md5.update(reply.get(HEADER_LEN..)?);
    md5.update(secret);
    Some(md5.finalize().into())
}

/// Reveals a hidden User-Password (RFC 2865 §5.2): `None` unless the value is 16 to 128
/// octets and a multiple of 16. Trailing NULs (the padding) are stripped; interior NULs are
/// kept, so the result is exactly what the user typed.
pub(crate) fn decrypt_user_password(
    hidden: &[u8],
    secret: &[u8],
    request_authenticator: &[u8; DIGEST_LEN],
) -> Option<Zeroizing<Vec<u8>>> {
    if !(16..=128).contains(&hidden.len()) || hidden.len() % DIGEST_LEN != 0 {
        return None;
    }
    let mut clear = Zeroizing::new(Vec::with_capacity(hidden.len()));
    let mut previous: &[u8] = request_authenticator;
    for block in hidden.chunks_exact(DIGEST_LEN) {
        let mut pad: [u8; DIGEST_LEN] = Md5::new()
            .chain_update(secret)
            .chain_update(previous)
            .finalize()
            .into();
        clear.extend(block.iter().zip(pad.iter()).map(|(c, b)| c ^ b));
        pad.zeroize();
        previous = block;
    }
    while clear.last() == Some(&0) {
        clear.pop();
    }
    Some(clear)
}

/// Hides a User-Password (RFC 2865 §5.2); the test-side inverse of
/// [`decrypt_user_password`]. `None` if the password is longer than 128 octets.
#[cfg(test)]
pub(crate) fn encrypt_user_password(
    password: &[u8],
    secret: &[u8],
    request_authenticator: &[u8; DIGEST_LEN],
) -> Option<Vec<u8>> {
    if password.len() > 128 {
        return None;
    }
    let padded_len = password.len().div_ceil(DIGEST_LEN).max(1) * DIGEST_LEN;
    let mut padded = password.to_vec();
    padded.resize(padded_len, 0);
    let mut hidden = Vec::with_capacity(padded_len);
    let mut previous = request_authenticator.to_vec();
    for block in padded.chunks_exact(DIGEST_LEN) {
        let pad: [u8; DIGEST_LEN] = Md5::new()
            .chain_update(secret)
            .chain_update(&previous)
            .finalize()
            .into();
        let cipher: Vec<u8> = block.iter().zip(pad.iter()).map(|(p, b)| p ^ b).collect();
        hidden.extend_from_slice(&cipher);
        previous = cipher;
    }
    Some(hidden)
}
