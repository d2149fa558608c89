//! Passkey sign-in on the web page, without HTTP: a discoverable passkey (the authenticator
//! names the user) or, after the password, one of the user's own passkeys as the second
//! factor. Throttled apart from the other credentials and capped per source address (module
//! doc of [`super::web`]); every attempt audited like the other web sign-ins.
//!
//! May depend on: `store`, `model`, `metrics`, and the sibling building blocks.

use crate::metrics::WebSignIn;
use serde_json::json;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PublicKeyCredential,
};

use super::passkeys::{method_id_for_credential, user_handle};
use super::session::{random_token, CEREMONY_LIFETIME};
use super::site::{activity, method_name, Failure, SelfService, Source};
use super::web::{Current, PasskeyChallenge, Refusal, SignInError, SignedIn};
use crate::model::{
    AuditResult, CeremonyKind, MethodKind, RegisteredMethod, Timestamp, User, WebAuthMethod,
    WebCeremony,
};

impl SelfService {
    /// Starts a passkey sign-in: for a user who still owes a second factor, with their own
    /// passkeys; otherwise a discoverable one (the authenticator names the user).
    pub async fn start_passkey_sign_in(
        &self,
        current: Option<&Current>,
        source: &Source,
    ) -> Result<PasskeyChallenge, Failure> {
        if let Err(throttled) = self.throttle.check_passkey(source.ip, self.now()) {
            return Err(Failure::Forbidden(
                Refusal::Throttled(throttled).message(""),
            ));
        }
        let now = self.now();
        let (kind, session_id_hash, options, state) = match current {
            Some(current) if current.is_pending() => {
                let passkeys = self.passkeys_of(&current.user).await?;
                if passkeys.is_empty() {
                    return Err(Failure::BadRequest(
                        "You have no passkey registered. Use your authenticator app.".to_owned(),
                    ));
                }
                let (options, state) = self
                    .passkeys
                    .start_authentication(&passkeys)
                    .map_err(Failure::internal)?;
                let state = serde_json::to_string(&state).map_err(Failure::internal)?;
                (
                    CeremonyKind::PasskeyAuthentication,
                    Some(current.session.id_hash.clone()),
                    options,
                    state,
                )
            }
            Some(_) => return Err(Failure::Forbidden("You are already signed in.".to_owned())),
            None => {
                let (options, state) = self
                    .passkeys
                    .start_discoverable()
                    .map_err(Failure::internal)?;
                let state = serde_json::to_string(&state).map_err(Failure::internal)?;
                (
                    CeremonyKind::DiscoverableAuthentication,
                    None,
                    options,
                    state,
                )
            }
        };
        let ceremony = WebCeremony {
            id: random_token(),
            kind,
            session_id_hash,
            state,
            created: now,
            expires: now + CEREMONY_LIFETIME,
        };
        if !self
            .ceremonies
            .start(&Self::ceremony_source(source), now, ceremony.expires)
        {
            return Err(Failure::TooManyRequests(
                "Too many passkey sign-ins were started from your address. Finish one, or try \
                 again in a few minutes."
                    .to_owned(),
            ));
        }
        self.service
            .store()
            .put_web_ceremony(&ceremony, now)
            .await?;
        Ok(PasskeyChallenge {
            ceremony_id: ceremony.id,
            options,
        })
    }

    /// The key passkey sign-in ceremonies are limited under: the source address (IPv6 by /64).
    pub(super) fn ceremony_source(source: &Source) -> String {
        format!("address:{}", super::throttle::source_key(source.ip))
    }

    /// The user's registered passkeys, decoded.
    pub(crate) async fn passkeys_of(&self, user: &User) -> Result<Vec<Passkey>, Failure> {
        let methods = self.service.store().methods(&user.id).await?;
        Ok(methods
            .iter()
            .filter(|m| m.kind == MethodKind::Fido2)
            .filter_map(|m| match serde_json::from_str::<Passkey>(&m.data) {
                Ok(passkey) => Some(passkey),
                Err(e) => {
                    log::error!("passkey {} of {} is unreadable: {e}", m.id, user.id);
                    None
                }
            })
            .collect())
    }

    /// Finishes a passkey sign-in started by [`Web::start_passkey_sign_in`].
    pub async fn finish_passkey_sign_in(
        &self,
        current: Option<&Current>,
        ceremony_id: &str,
        response: &PublicKeyCredential,
        source: &Source,
    ) -> Result<SignedIn, SignInError> {
        let store = self.service.store();
        let now = self.now();
        let ceremony = store.take_web_ceremony(ceremony_id).await?;
        if ceremony.is_some() {
            self.ceremonies.finish(&Self::ceremony_source(source));
        }
        let ceremony = ceremony.filter(|c| now < c.expires);
        match (ceremony, current) {
            (Some(c), None) if c.kind == CeremonyKind::DiscoverableAuthentication => {
                self.finish_discoverable(&c, response, source, now).await
            }
            (Some(c), Some(current))
                if c.kind == CeremonyKind::PasskeyAuthentication
                    && current.is_pending()
                    && c.session_id_hash.as_deref() == Some(current.session.id_hash.as_str()) =>
            {
                self.finish_second_factor_passkey(&c, current, response, source, now)
                    .await
            }
            (_, current) => {
                let actor = current.map_or("unknown", |c| c.user.user_principal_name.as_str());
                self.refuse_passkey(actor, source, now).await
            }
        }
    }

    /// Refuses (with audit) a passkey assertion that did not verify, counting it against the
    /// source's passkey throttle.
    async fn refuse_passkey<T>(
        &self,
        actor: &str,
        source: &Source,
        now: Timestamp,
    ) -> Result<T, SignInError> {
        self.throttle.record_passkey_failure(source.ip, now);
        self.refuse(actor, method_name::PASSKEY, Refusal::PasskeyRefused, source)
            .await
    }

    pub(super) async fn finish_discoverable(
        &self,
        ceremony: &WebCeremony,
        response: &PublicKeyCredential,
        source: &Source,
        now: Timestamp,
    ) -> Result<SignedIn, SignInError> {
        let store = self.service.store();
        let state: DiscoverableAuthentication = serde_json::from_str(&ceremony.state)
            .map_err(|e| Failure::internal_in("ceremony state", e))?;
        let claimed = self
            .passkeys
            .identify_discoverable(response)
            .ok()
            .map(|(handle, credential_id)| (handle, method_id_for_credential(credential_id)));
        let method = match &claimed {
            Some((_, method_id)) => store.method(method_id).await?,
            None => None,
        };
        let found = match (claimed, method) {
            (Some((handle, _)), Some(method))
                if method.kind == MethodKind::Fido2 && user_handle(&method.user_id) == handle =>
            {
                store
                    .user(&method.user_id)
                    .await?
                    .filter(|u| u.id == method.user_id && u.account_enabled)
                    .map(|user| (user, method))
            }
            _ => None,
        };
        let Some((user, method)) = found else {
            return self.refuse_passkey("unknown", source, now).await;
        };
        let actor = user.user_principal_name.clone();
        self.check_passkey_throttle(&actor, source).await?;
        self.refuse_quarantined(Some(&user), &actor, method_name::PASSKEY, source)
            .await?;
        let verified = serde_json::from_str::<Passkey>(&method.data)
            .ok()
            .and_then(|passkey| {
                self.passkeys
                    .finish_discoverable(response, state, &passkey)
                    .ok()
                    .map(|result| (passkey, result))
            });
        let Some((mut passkey, result)) = verified else {
            return self.refuse_passkey(&actor, source, now).await;
        };
        self.store_counter(&method, &mut passkey, &result).await?;
        let event = self.web_event(
            activity::SIGN_IN,
            &actor,
            AuditResult::Success,
            None,
            source,
            json!({ "authenticationMethod": method_name::PASSKEY, "methodId": method.id }),
        );
        let (_, groups) = self.scope_of(&user).await?;
        let signed_in = self
            .open_session(
                &user,
                WebAuthMethod::Passkey,
                None,
                &groups,
                Some(&event),
                now,
            )
            .await?;
        self.note_sign_in(&event, WebSignIn::PasskeySuccess);
        Ok(signed_in)
    }

    pub(super) async fn finish_second_factor_passkey(
        &self,
        ceremony: &WebCeremony,
        current: &Current,
        response: &PublicKeyCredential,
        source: &Source,
        now: Timestamp,
    ) -> Result<SignedIn, SignInError> {
        let user = &current.user;
        let actor = user.user_principal_name.clone();
        self.check_passkey_throttle(&actor, source).await?;
        self.refuse_quarantined(Some(user), &actor, method_name::PASSKEY, source)
            .await?;
        let state: PasskeyAuthentication = serde_json::from_str(&ceremony.state)
            .map_err(|e| Failure::internal_in("ceremony state", e))?;
        let Ok(result) = self.passkeys.finish_authentication(response, &state) else {
            return self.refuse_passkey(&actor, source, now).await;
        };
        let method_id = method_id_for_credential(result.cred_id());
        if let Some(method) = self
            .service
            .store()
            .method(&method_id)
            .await?
            .filter(|m| m.user_id == user.id)
        {
            if let Ok(mut passkey) = serde_json::from_str::<Passkey>(&method.data) {
                self.store_counter(&method, &mut passkey, &result).await?;
            }
        }
        self.upgrade(current, method_name::PASSKEY, source, now)
            .await
    }

    /// Saves a passkey's moved signature counter / backup state after an assertion.
    pub(super) async fn store_counter(
        &self,
        method: &RegisteredMethod,
        passkey: &mut Passkey,
        result: &webauthn_rs::prelude::AuthenticationResult,
    ) -> Result<(), Failure> {
        if passkey.update_credential(result) == Some(true) {
            let updated = serde_json::to_string(passkey).map_err(Failure::internal)?;
            // Losing this race to a concurrent sign-in only loses one counter step.
            self.service
                .store()
                .swap_method_data(&method.id, &method.data, &updated)
                .await?;
        }
        Ok(())
    }
}
