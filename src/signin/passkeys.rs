//! Passkeys and security keys (WebAuthn) through webauthn-rs: the relying party is the host of
//! `public_url` and the only accepted origin is `public_url` itself; user verification is
//! required; credentials a user already has are excluded from a new registration; the
//! ceremony state goes to the store (never to the browser) and is taken once.
//!
//! New passkeys are asked to be discoverable (`residentKey: preferred`), so a user can sign in
//! later without typing a name. A credential's method id is derived from its credential id
//! (UUID v5), so the store can find it from an assertion and refuse a credential registered
//! twice; the WebAuthn user handle is derived from the user's stable directory id the same way.
//!
//! May depend on: `model`, `config::PublicUrl`, webauthn-rs.

use uuid::Uuid;
use webauthn_rs::prelude::{
    AuthenticationResult, CreationChallengeResponse, DiscoverableAuthentication, DiscoverableKey,
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, Url, Webauthn, WebauthnBuilder,
    WebauthnError,
};
use webauthn_rs_proto::ResidentKeyRequirement;

use crate::config::PublicUrl;
use crate::model::User;

/// Namespace of the UUID v5 user handles (random, fixed forever: changing it orphans every
/// registered passkey's user handle).
const USER_HANDLE_NAMESPACE: Uuid = Uuid::from_u128(0x7a1c_3f0e_5b2d_4c8a_9e61_d0f4_2b7c_8e15);
/// Namespace of the UUID v5 method ids of FIDO2 credentials.
const CREDENTIAL_NAMESPACE: Uuid = Uuid::from_u128(0x3d9e_61a4_0c7b_4f52_8a13_e6b5_9d20_c471);

/// Errors of passkey ceremonies.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The relying party could not be set up from `public_url` (an IP address, a bad origin).
    #[error("WebAuthn can't be set up for {origin}: {reason}")]
    Configuration {
        /// The public URL.
        origin: String,
        /// What webauthn-rs said.
        reason: String,
    },
    /// The browser's answer failed a check (origin, challenge, user verification, signature…).
    #[error("the passkey response was refused: {0}")]
    Refused(WebauthnError),
    /// Stored ceremony state or credential could not be read or written.
    #[error("passkey state could not be read or written: {0}")]
    State(String),
}

/// The relying party.
#[derive(Debug)]
pub struct Passkeys {
    webauthn: Webauthn,
}

/// The WebAuthn user handle of a user: UUID v5 of the stable directory id.
pub fn user_handle(user_id: &str) -> Uuid {
    Uuid::new_v5(&USER_HANDLE_NAMESPACE, user_id.as_bytes())
}

/// The method id of a FIDO2 credential: UUID v5 of its credential id.
pub fn method_id_for_credential(credential_id: &[u8]) -> String {
    Uuid::new_v5(&CREDENTIAL_NAMESPACE, credential_id).to_string()
}

impl Passkeys {
    /// The relying party for `public_url`: rp id = its host, the one allowed origin = itself.
    pub fn new(public_url: &PublicUrl, name: &str) -> Result<Self, PasskeyError> {
        let configuration = |reason: String| PasskeyError::Configuration {
            origin: public_url.to_string(),
            reason,
        };
        let origin = Url::parse(public_url.as_str()).map_err(|e| configuration(e.to_string()))?;
        let webauthn = WebauthnBuilder::new(public_url.host(), &origin)
            .and_then(|b| b.rp_name(name).build())
            .map_err(|e| configuration(e.to_string()))?;
        Ok(Passkeys { webauthn })
    }

    /// Starts registering a passkey for `user`, excluding the credentials in `existing`.
    pub fn start_registration(
        &self,
        user: &User,
        existing: &[Passkey],
    ) -> Result<(CreationChallengeResponse, PasskeyRegistration), PasskeyError> {
        let exclude: Vec<_> = existing.iter().map(|p| p.cred_id().clone()).collect();
        let (mut options, state) = self
            .webauthn
            .start_passkey_registration(
                user_handle(&user.id),
                &user.user_principal_name,
                &user.display_name,
                (!exclude.is_empty()).then_some(exclude),
            )
            .map_err(PasskeyError::Refused)?;
        // Ask for a discoverable credential so the user can sign in without typing a name;
        // an authenticator that can't store one still registers (preferred, not required).
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(ResidentKeyRequirement::Preferred);
        }
        Ok((options, state))
    }

    /// Checks the browser's answer against the stored state.
    pub fn finish_registration(
        &self,
        response: &RegisterPublicKeyCredential,
        state: &PasskeyRegistration,
    ) -> Result<Passkey, PasskeyError> {
        self.webauthn
            .finish_passkey_registration(response, state)
            .map_err(PasskeyError::Refused)
    }

    /// Starts an assertion with one of `passkeys` (a known user).
    pub fn start_authentication(
        &self,
        passkeys: &[Passkey],
    ) -> Result<(RequestChallengeResponse, PasskeyAuthentication), PasskeyError> {
        self.webauthn
            .start_passkey_authentication(passkeys)
            .map_err(PasskeyError::Refused)
    }

    /// Checks an assertion of a known user.
    pub fn finish_authentication(
        &self,
        response: &PublicKeyCredential,
        state: &PasskeyAuthentication,
    ) -> Result<AuthenticationResult, PasskeyError> {
        self.webauthn
            .finish_passkey_authentication(response, state)
            .map_err(PasskeyError::Refused)
    }

    /// Starts a sign-in where the authenticator names the user (a discoverable credential).
    /// The browser is asked for a plain modal request, not conditional mediation.
    pub fn start_discoverable(
        &self,
    ) -> Result<(RequestChallengeResponse, DiscoverableAuthentication), PasskeyError> {
        let (mut options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(PasskeyError::Refused)?;
        options.mediation = None;
        Ok((options, state))
    }

    /// The user handle and credential id an assertion claims, before it is verified.
    pub fn identify_discoverable<'a>(
        &self,
        response: &'a PublicKeyCredential,
    ) -> Result<(Uuid, &'a [u8]), PasskeyError> {
        self.webauthn
            .identify_discoverable_authentication(response)
            .map_err(PasskeyError::Refused)
    }

    /// Checks a discoverable assertion against the credential it named.
    pub fn finish_discoverable(
        &self,
        response: &PublicKeyCredential,
        state: DiscoverableAuthentication,
        passkey: &Passkey,
    ) -> Result<AuthenticationResult, PasskeyError> {
        self.webauthn
            .finish_discoverable_authentication_v2(response, state, DiscoverableKey::from(passkey))
            .map_err(PasskeyError::Refused)
    }
}

/// Passkey ceremonies a source may have outstanding (started, not finished, not expired).
pub const MAX_CEREMONIES_PER_SOURCE: usize = 8;

/// Most sources a [`CeremonyLimiter`] tracks; when full, the least recently active go.
const CEREMONY_LIMITER_ENTRIES: usize = 10_000;

/// Limits the passkey ceremonies (sign-in and registration starts, each a store row) per
/// source: at most [`MAX_CEREMONIES_PER_SOURCE`] outstanding within their lifetime; a start
/// beyond that is answered 429 without a store write. A finish (successful or not) frees its
/// slot; an abandoned one frees it when it expires (the store prunes expired rows at every
/// write). Bounded in memory; time is a parameter.
#[derive(Debug, Default)]
pub struct CeremonyLimiter {
    sources: std::sync::Mutex<std::collections::HashMap<String, Vec<crate::model::Timestamp>>>,
}

impl CeremonyLimiter {
    /// Takes a slot for `source` at `now` for ceremonies expiring at `expires`; `false` when
    /// the source already has its maximum outstanding.
    pub fn start(
        &self,
        source: &str,
        now: crate::model::Timestamp,
        expires: crate::model::Timestamp,
    ) -> bool {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if !sources.contains_key(source) && sources.len() >= CEREMONY_LIMITER_ENTRIES {
            sources.retain(|_, slots| {
                slots.retain(|until| now < *until);
                !slots.is_empty()
            });
            while sources.len() >= CEREMONY_LIMITER_ENTRIES {
                let oldest = sources
                    .iter()
                    .min_by_key(|(_, slots)| slots.iter().max().copied())
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(oldest) => sources.remove(&oldest),
                    None => break,
                };
            }
        }
        let slots = sources.entry(source.to_owned()).or_default();
        slots.retain(|until| now < *until);
        if slots.len() >= MAX_CEREMONIES_PER_SOURCE {
            return false;
        }
        slots.push(expires);
        true
    }

    /// Frees one slot of `source` (a ceremony was finished).
    pub fn finish(&self, source: &str) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slots) = sources.get_mut(source) {
            if let Some(first) = slots
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| **t)
                .map(|(i, _)| i)
            {
                slots.swap_remove(first);
            }
            if slots.is_empty() {
                sources.remove(source);
            }
        }
    }

    /// Sources tracked.
    pub fn tracked(&self) -> usize {
        self.sources.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
