//! Signing in on the web page, without HTTP: which prompt a name gets, the TAP rules of
//! DESIGN §2, the directory password, the second factor a user with registered methods must
//! present after the password, passkey sign-in, and the sessions that result.
//!
//! Rules, in order of a TAP sign-in:
//! 0. the typed name (already trimmed by the form handler) must pass
//!    [`crate::signin::check_sign_in_name`], or the request gets a 400 naming the problem with
//!    nothing looked up, counted or audited;
//! 1. the throttle is asked first (no hashing for a name locked from this address, or a locked
//!    address); a refusal is audited at most once per throttle key per minute, with a count;
//! 2. the typed code is verified against the user's TAP hash, or against a decoy when there is
//!    no such user or TAP, so every path costs one argon2 verification;
//! 3. `policy::web_sign_in_check` decides, with its reason codes and DESIGN's messages;
//! 4. a one-time TAP is consumed with `Store::consume_one_time_tap` (its success audit in the
//!    same transaction): of N concurrent sign-ins exactly one gets a session;
//! 5. the session never outlives the TAP; after a one-time TAP the registration window is
//!    10 minutes; users in a registration-interrupt group get interrupt mode.
//!
//! Passkey sign-ins are throttled apart ([`super::throttle::Throttle::check_passkey`]): a
//! password, TAP or app-code failure never locks them. Passkey sign-in ceremonies are capped
//! per source address ([`super::passkeys::CeremonyLimiter`]).
//!
//! Every attempt is audited (activity [`activity::SIGN_IN`], `details.authenticationMethod`,
//! reason codes on failure). A name that doesn't exist gets the same prompt, message and cost
//! as a wrong password or code.
//!
//! May depend on: `service`, `store`, `policy`, `directory`, `tapcode`, `model`, `metrics`,
//! and the sibling building blocks.

use crate::metrics::{TapRejection, TapUseChannel, WebSignIn};
use serde_json::json;
use webauthn_rs::prelude::RequestChallengeResponse;
use zeroize::Zeroizing;

use super::session::{
    hash_id, is_token, random_token, REGISTRATION_WINDOW, SECOND_FACTOR_WINDOW, SESSION_LIFETIME,
};
use super::site::{activity, method_name, Failure, SelfService, Source};
use super::totp;
use crate::directory::PasswordCheck;
use crate::model::{
    AuditResult, Channel, Group, NewAuditEvent, StoredTap, Timestamp, User, WebAuthMethod,
    WebSession,
};
use crate::policy::{self, SignInFailure, UsabilityReason};
use crate::service::TapDetails;
use crate::tapcode::MAX_CREDENTIAL_BYTES;

use super::{check_sign_in_name, MAX_NAME_BYTES};

/// What the page asks for after the user gave their name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// The user is in the TAP policy's scope and holds a TAP.
    TemporaryAccessPass,
    /// Everyone else (including names that don't exist): the directory password.
    Password,
}

/// A valid session and its user, as found from the request's cookie.
///
/// Only [`SelfService::current`] makes one, from a session id, and nobody can change one: what
/// is done for "the signed-in user" (self-service registration,
/// [`SelfService::registration`]) is done for the user whose cookie came with the request.
///
/// ```compile_fail
/// // A front end can't make up a session for someone.
/// fn forge(session: tapd::model::WebSession, user: tapd::model::User) -> tapd::signin::web::Current {
///     tapd::signin::web::Current { session, user, tap: None }
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Current {
    pub(super) session: WebSession,
    pub(super) user: User,
    pub(super) tap: Option<TapDetails>,
}

impl Current {
    /// Whether the user still has to present a second factor.
    pub fn is_pending(&self) -> bool {
        self.session.auth_method == WebAuthMethod::PasswordPendingSecondFactor
    }

    /// The session.
    pub fn session(&self) -> &WebSession {
        &self.session
    }

    /// Its user.
    pub fn user(&self) -> &User {
        &self.user
    }

    /// The TAP the session began with, when it did, with its usability at the request.
    pub fn tap(&self) -> Option<&TapDetails> {
        self.tap.as_ref()
    }
}

/// A new session; the id goes into the cookie and nowhere else.
#[derive(Clone, Debug)]
pub struct SignedIn {
    /// The session id for the cookie.
    pub session_id: String,
    /// The stored session.
    pub session: WebSession,
    /// Its user.
    pub user: User,
}

pub use super::outcome::Refusal;

/// A refused sign-in, or a failure to decide.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Refused, with a message for the user.
    #[error("sign-in refused: {}", .0.code())]
    Refused(Refusal),
    /// Could not decide (store down, hashing overloaded…).
    #[error(transparent)]
    Failed(#[from] Failure),
}

impl From<crate::store::StoreError> for SignInError {
    fn from(e: crate::store::StoreError) -> Self {
        SignInError::Failed(e.into())
    }
}

/// A ceremony id and the options the browser passes to `navigator.credentials`.
#[derive(Debug)]
pub struct PasskeyChallenge {
    /// The server-side ceremony the answer must name.
    pub ceremony_id: String,
    /// `navigator.credentials.get` options.
    pub options: RequestChallengeResponse,
}

impl SelfService {
    /// The service's clock reading.
    pub fn now(&self) -> Timestamp {
        self.service.clock().now()
    }

    /// A sign-in audit event on the web channel.
    pub(crate) fn web_event(
        &self,
        activity: &str,
        actor: &str,
        result: AuditResult,
        reason: Option<&str>,
        source: &Source,
        details: serde_json::Value,
    ) -> NewAuditEvent {
        NewAuditEvent {
            time: self.now(),
            actor: actor.to_owned(),
            activity: activity.to_owned(),
            target: Some(actor.to_owned()),
            result,
            reason_code: reason.map(str::to_owned),
            channel: Channel::Web,
            source_address: Some(source.text.clone()),
            details,
        }
    }

    /// Records a refused sign-in (store and journal); a store failure is logged, not raised,
    /// so the user still gets the refusal.
    pub(super) async fn audit_refusal(
        &self,
        actor: &str,
        method: &str,
        refusal: &Refusal,
        source: &Source,
        attempts: Option<u64>,
    ) {
        let mut details = json!({ "authenticationMethod": method });
        if let (Some(attempts), Some(map)) = (attempts, details.as_object_mut()) {
            map.insert("attempts".into(), json!(attempts));
        }
        let event = self.web_event(
            activity::SIGN_IN,
            actor,
            AuditResult::Failure,
            Some(refusal.code()),
            source,
            details,
        );
        crate::audit::log(&event);
        self.count_refusal(method, refusal);
        if let Err(e) = self.service.store().append_audit(&event).await {
            log::error!("could not record a refused web sign-in: {e}");
        }
    }

    /// Counts a refused sign-in in `/metrics` (method and result; TAP refusals by reason).
    pub(super) fn count_refusal(&self, method: &str, refusal: &Refusal) {
        let metrics = self.service.metrics();
        let series = match method {
            method_name::TAP => WebSignIn::TapFailure,
            method_name::PASSKEY => WebSignIn::PasskeyFailure,
            _ => WebSignIn::PasswordFailure,
        };
        metrics.web_sign_ins.inc(series);
        if let Refusal::Tap(failure) = refusal {
            metrics.tap_rejections.inc(TapRejection::of(failure));
        }
    }

    pub(super) async fn refuse<T>(
        &self,
        actor: &str,
        method: &str,
        refusal: Refusal,
        source: &Source,
    ) -> Result<T, SignInError> {
        self.audit_refusal(actor, method, &refusal, source, None)
            .await;
        Err(SignInError::Refused(refusal))
    }

    /// Refuses a typed name that [`check_sign_in_name`] does not allow: a 400 naming the
    /// problem, before any store access, hashing, throttle entry or audit event.
    pub(super) fn check_name(name: &str) -> Result<(), Failure> {
        check_sign_in_name(name).map_err(|e| Failure::BadRequest(format!("{e}.")))
    }

    /// The user a typed name stands for (userPrincipalName, username or id).
    pub(super) async fn find_user(&self, name: &str) -> Result<Option<User>, Failure> {
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Ok(None);
        }
        Ok(self.service.store().user(name).await?)
    }

    /// Refuses (and audits) a sign-in of a user quarantined by an identity conflict, on every
    /// method: the name it typed may be another user's.
    pub(super) async fn refuse_quarantined(
        &self,
        user: Option<&User>,
        actor: &str,
        method: &str,
        source: &Source,
    ) -> Result<(), SignInError> {
        match user.and_then(|u| u.identity_conflict.as_ref()) {
            Some(conflict) => {
                log::warn!(
                    "web sign-in refused: {actor} is quarantined by an identity conflict: {}",
                    conflict.describe()
                );
                self.refuse(actor, method, Refusal::IdentityConflict, source)
                    .await
            }
            None => Ok(()),
        }
    }

    /// The common start of a sign-in by typed name: checks the name, finds the user, and
    /// refuses (with audit) a throttled attempt or a quarantined user. Returns the user, the
    /// actor the audit names, and the throttle key.
    async fn begin_named(
        &self,
        name: &str,
        method: &str,
        source: &Source,
    ) -> Result<(Option<User>, String, String), SignInError> {
        Self::check_name(name)?;
        let user = self.find_user(name).await?;
        let actor = user
            .as_ref()
            .map_or_else(|| name.trim().to_owned(), |u| u.user_principal_name.clone());
        let key = Self::throttle_key(name, user.as_ref());
        self.admit(&key, user.as_ref(), &actor, method, source)
            .await?;
        Ok((user, actor, key))
    }

    /// Refuses (with audit) an attempt the throttle does not allow now, then one by a
    /// quarantined user: the checks every sign-in step makes before looking at a credential.
    async fn admit(
        &self,
        key: &str,
        user: Option<&User>,
        actor: &str,
        method: &str,
        source: &Source,
    ) -> Result<(), SignInError> {
        self.check_throttle(key, actor, method, source).await?;
        self.refuse_quarantined(user, actor, method, source).await
    }

    /// The throttle key of a sign-in: the user's stable id when the name is known (so UPN and
    /// username share one counter), else the typed name.
    pub(super) fn throttle_key(name: &str, user: Option<&User>) -> String {
        match user {
            Some(user) => format!("id:{}", user.id),
            None => format!("name:{}", name.trim()),
        }
    }

    /// Refuses (and audits) an attempt the throttle does not allow now.
    pub(super) async fn check_throttle(
        &self,
        key: &str,
        actor: &str,
        method: &str,
        source: &Source,
    ) -> Result<(), SignInError> {
        let now = self.now();
        match self.throttle.check_keyed(key, source.ip, now) {
            Ok(()) => Ok(()),
            Err((throttled, aggregate)) => {
                self.refuse_throttled(throttled, &aggregate, actor, method, source, now)
                    .await
            }
        }
    }

    /// Refuses a throttled attempt. One audit event per aggregate key per minute, counting the
    /// attempts it stands for: a flood from a locked source can't fill the audit.
    async fn refuse_throttled(
        &self,
        throttled: super::throttle::Throttled,
        aggregate: &str,
        actor: &str,
        method: &str,
        source: &Source,
        now: Timestamp,
    ) -> Result<(), SignInError> {
        let refusal = Refusal::Throttled(throttled);
        match self.throttle.note_refusal(aggregate, now) {
            Some(attempts) => {
                self.audit_refusal(actor, method, &refusal, source, Some(attempts))
                    .await
            }
            None => self.count_refusal(method, &refusal),
        }
        Err(SignInError::Refused(refusal))
    }

    /// Refuses a passkey sign-in from a source with too many failed assertions. Password, TAP
    /// and app-code failures never count here.
    pub(super) async fn check_passkey_throttle(
        &self,
        actor: &str,
        source: &Source,
    ) -> Result<(), SignInError> {
        let now = self.now();
        match self.throttle.check_passkey(source.ip, now) {
            Ok(()) => Ok(()),
            Err(throttled) => {
                let key = format!("passkey:{}", super::throttle::source_key(source.ip));
                self.refuse_throttled(throttled, &key, actor, method_name::PASSKEY, source, now)
                    .await
            }
        }
    }

    /// The user's effective groups and the policy.
    pub(super) async fn scope_of(
        &self,
        user: &User,
    ) -> Result<(crate::model::TapPolicy, Vec<Group>), Failure> {
        let store = self.service.store();
        Ok((
            store.policy().await?,
            store.groups_by_id(&user.group_ids).await?,
        ))
    }

    /// Whether any of `groups` is a configured registration-interrupt group.
    pub(super) fn in_interrupt_scope(&self, groups: &[Group]) -> bool {
        let index = self.service.group_index();
        self.settings
            .registration_interrupt_groups
            .iter()
            .map(|name| index.resolve(name))
            .any(|reference| groups.iter().any(|g| reference.names(&index, &g.id, &g.dn)))
    }

    /// Which prompt a typed name gets: the TAP prompt when the user is in the policy's scope
    /// and holds a TAP (usable or not: its refusal then says why), else the password prompt.
    pub async fn prompt_for(&self, name: &str) -> Result<Prompt, Failure> {
        Self::check_name(name)?;
        let Some(user) = self.find_user(name).await? else {
            return Ok(Prompt::Password);
        };
        if self.service.store().tap_for_user(&user.id).await?.is_none() {
            return Ok(Prompt::Password);
        }
        let (policy, groups) = self.scope_of(&user).await?;
        Ok(
            if policy::in_scope(&policy, &user, &groups, &self.service.group_index()) {
                Prompt::TemporaryAccessPass
            } else {
                Prompt::Password
            },
        )
    }

    /// Signs in with a Temporary Access Pass (module doc for the order of checks).
    pub async fn sign_in_with_tap(
        &self,
        name: &str,
        code: Zeroizing<String>,
        source: &Source,
    ) -> Result<SignedIn, SignInError> {
        let (user, actor, key) = self.begin_named(name, method_name::TAP, source).await?;
        let store = self.service.store();
        let tap = match &user {
            Some(user) => store.tap_for_user(&user.id).await?,
            None => None,
        };
        let code_matches = self
            .service
            .hasher()
            .verify(code, tap.as_ref().map(|t| t.code_hash.clone()))
            .await
            .map_err(Failure::from)?;
        let now = self.now();
        if !code_matches {
            self.throttle.record_failure(&key, source.ip, now);
        }
        let Some(user) = user else {
            return self
                .refuse(
                    &actor,
                    method_name::TAP,
                    Refusal::Tap(SignInFailure::TapNotFound),
                    source,
                )
                .await;
        };
        let (policy, groups) = self.scope_of(&user).await?;
        if let Err(failure) = policy::web_sign_in_check(
            &policy,
            &user,
            &groups,
            &self.service.group_index(),
            tap.as_ref(),
            code_matches,
            now,
        ) {
            return self
                .refuse(&actor, method_name::TAP, Refusal::Tap(failure), source)
                .await;
        }
        let Some(tap) = tap else {
            // web_sign_in_check refuses a missing TAP; nothing to sign in with.
            return Err(Failure::Internal("TAP vanished after its check".into()).into());
        };
        let success = self.web_event(
            activity::SIGN_IN,
            &actor,
            AuditResult::Success,
            None,
            source,
            json!({
                "authenticationMethod": method_name::TAP,
                "TemporaryAccessPass.Id": tap.id,
                "TemporaryAccessPass.AccessPassUsage": if tap.is_usable_once { "Once" } else { "Multiple" },
            }),
        );
        // A one-time TAP's success is recorded with its consumption, a multi-use one's with
        // the session: either way in the same transaction as the change it belongs to.
        let session_audit = if tap.is_usable_once {
            if !store.consume_one_time_tap(&tap.id, now, &success).await? {
                // Another sign-in consumed it between our read and now.
                return self
                    .refuse(
                        &actor,
                        method_name::TAP,
                        Refusal::Tap(SignInFailure::TapOneTimeUsed),
                        source,
                    )
                    .await;
            }
            None
        } else {
            Some(&success)
        };
        let signed_in = self
            .open_session(
                &user,
                WebAuthMethod::TemporaryAccessPass,
                Some(&tap),
                &groups,
                session_audit,
                now,
            )
            .await?;
        self.note_sign_in(&success, WebSignIn::TapSuccess);
        self.service.metrics().taps_used.inc(TapUseChannel::Web);
        self.throttle.record_success(&key, source.ip);
        Ok(signed_in)
    }

    /// Signs in with the directory password. A user who already has registered methods gets
    /// a session that can only present one of them next.
    pub async fn sign_in_with_password(
        &self,
        name: &str,
        password: Zeroizing<String>,
        source: &Source,
    ) -> Result<SignedIn, SignInError> {
        let (user, actor, key) = self
            .begin_named(name, method_name::PASSWORD, source)
            .await?;
        let valid = match &user {
            Some(user) if user.account_enabled && password.len() <= MAX_CREDENTIAL_BYTES => {
                match self.directory.check_password(user, &password).await {
                    Ok(PasswordCheck::Valid) => true,
                    Ok(PasswordCheck::Invalid) => false,
                    Ok(PasswordCheck::BoundIdentityMismatch) => {
                        self.service.syncer().request_incremental(&format!(
                            "the entry at {} is no longer {}",
                            user.dn, user.user_principal_name
                        ));
                        return self
                            .refuse(
                                &actor,
                                method_name::PASSWORD,
                                Refusal::BoundIdentityMismatch,
                                source,
                            )
                            .await;
                    }
                    Err(e) => return Err(Failure::unavailable(e).into()),
                }
            }
            _ => {
                // Spend what a real check would, so timing does not tell names apart.
                self.service
                    .hasher()
                    .verify(password, None)
                    .await
                    .map_err(Failure::from)?;
                false
            }
        };
        let now = self.now();
        let Some(user) = user.filter(|_| valid) else {
            self.throttle.record_failure(&key, source.ip, now);
            return self
                .refuse(
                    &actor,
                    method_name::PASSWORD,
                    Refusal::InvalidPassword,
                    source,
                )
                .await;
        };
        self.throttle.record_success(&key, source.ip);
        let has_methods = !self.service.store().methods(&user.id).await?.is_empty();
        let method = if has_methods {
            WebAuthMethod::PasswordPendingSecondFactor
        } else {
            WebAuthMethod::Password
        };
        let event = self.web_event(
            activity::SIGN_IN,
            &actor,
            AuditResult::Success,
            None,
            source,
            json!({
                "authenticationMethod": method_name::PASSWORD,
                "secondFactorRequired": has_methods,
            }),
        );
        let (_, groups) = self.scope_of(&user).await?;
        let signed_in = self
            .open_session(&user, method, None, &groups, Some(&event), now)
            .await?;
        self.note_sign_in(&event, WebSignIn::PasswordSuccess);
        Ok(signed_in)
    }

    /// The second factor after the password: a code from a registered authenticator app.
    /// Each code is accepted once (the accepted step is swapped in atomically).
    pub async fn verify_app_code(
        &self,
        current: &Current,
        code: &str,
        source: &Source,
    ) -> Result<SignedIn, SignInError> {
        if !current.is_pending() {
            return Err(Failure::Forbidden("You are already signed in.".to_owned()).into());
        }
        let user = &current.user;
        let key = Self::throttle_key("", Some(user));
        let actor = user.user_principal_name.clone();
        self.admit(
            &key,
            Some(user),
            &actor,
            method_name::AUTHENTICATOR_APP,
            source,
        )
        .await?;
        let now = self.now();
        if self.accept_app_code(user, code, now).await? {
            self.throttle.record_success(&key, source.ip);
            return self
                .upgrade(current, method_name::AUTHENTICATOR_APP, source, now)
                .await;
        }
        self.throttle.record_failure(&key, source.ip, now);
        self.refuse(
            &actor,
            method_name::AUTHENTICATOR_APP,
            Refusal::InvalidCode,
            source,
        )
        .await
    }

    /// Whether `code` is a fresh code of one of the user's authenticator apps; marks it used
    /// (the rule RADIUS shares: [`totp::accept_code`]).
    pub(super) async fn accept_app_code(
        &self,
        user: &User,
        code: &str,
        now: Timestamp,
    ) -> Result<bool, Failure> {
        let store = self.service.store();
        let found = totp::accept_code(store.as_ref(), &user.id, code, now).await?;
        Ok(found == totp::AppCode::Accepted)
    }

    /// Replaces a pending session by a full one (a new id: privileges changed).
    pub(super) async fn upgrade(
        &self,
        current: &Current,
        second_factor: &str,
        source: &Source,
        now: Timestamp,
    ) -> Result<SignedIn, SignInError> {
        let event = self.web_event(
            activity::SIGN_IN,
            &current.user.user_principal_name,
            AuditResult::Success,
            None,
            source,
            json!({ "authenticationMethod": second_factor, "afterPassword": true }),
        );
        self.service
            .store()
            .delete_web_session(&current.session.id_hash)
            .await?;
        let (_, groups) = self.scope_of(&current.user).await?;
        let signed_in = self
            .open_session(
                &current.user,
                WebAuthMethod::PasswordAndSecondFactor,
                None,
                &groups,
                Some(&event),
                now,
            )
            .await?;
        crate::audit::log(&event);
        Ok(signed_in)
    }

    /// Logs a sign-in's success event (already stored with its session or TAP) and counts
    /// it.
    pub(super) fn note_sign_in(&self, event: &NewAuditEvent, series: WebSignIn) {
        crate::audit::log(event);
        self.service.metrics().web_sign_ins.inc(series);
    }

    /// Opens a session for `user` (module doc for its limits), recording `audit` with it.
    pub(crate) async fn open_session(
        &self,
        user: &User,
        method: WebAuthMethod,
        tap: Option<&StoredTap>,
        groups: &[Group],
        audit: Option<&NewAuditEvent>,
        now: Timestamp,
    ) -> Result<SignedIn, Failure> {
        let session_id = random_token();
        let lifetime = if method == WebAuthMethod::PasswordPendingSecondFactor {
            SECOND_FACTOR_WINDOW
        } else {
            SESSION_LIFETIME
        };
        let mut expires = now + lifetime;
        if let Some(tap) = tap {
            expires = expires.min(tap.expires());
        }
        let session = WebSession {
            id_hash: hash_id(&session_id),
            user_id: user.id.clone(),
            created: now,
            expires,
            auth_method: method,
            tap_id: tap.map(|t| t.id.clone()),
            tap_expires: tap.map(StoredTap::expires),
            registration_deadline: tap
                .filter(|t| t.is_usable_once)
                .map(|_| now + REGISTRATION_WINDOW),
            interrupt_mode: tap.is_some() && self.in_interrupt_scope(groups),
            csrf_token: random_token(),
        };
        self.service
            .store()
            .create_web_session(&session, audit, now)
            .await?;
        Ok(SignedIn {
            session_id,
            session,
            user: user.clone(),
        })
    }

    /// The valid session the cookie value names, if any. A session that is over (expired, its
    /// user gone or disabled, its TAP deleted, expired or out of policy) is deleted here.
    pub async fn current(&self, session_id: Option<&str>) -> Result<Option<Current>, Failure> {
        let Some(session_id) = session_id.filter(|id| is_token(id)) else {
            return Ok(None);
        };
        let store = self.service.store();
        let Some(session) = store.web_session(&hash_id(session_id)).await? else {
            return Ok(None);
        };
        let now = self.now();
        let user = store
            .user(&session.user_id)
            .await?
            .filter(|u| u.id == session.user_id && u.account_enabled);
        let (tap, tap_ok) = match (&session.tap_id, &user) {
            (Some(tap_id), Some(user)) => {
                let tap = store
                    .tap_for_user(&user.id)
                    .await?
                    .filter(|t| &t.id == tap_id);
                let details = match tap {
                    Some(tap) => {
                        let (policy, groups) = self.scope_of(user).await?;
                        let (is_usable, reason) = policy::usability(
                            &policy,
                            user,
                            &groups,
                            &self.service.group_index(),
                            &tap,
                            now,
                        );
                        Some(TapDetails {
                            tap,
                            is_usable,
                            reason,
                        })
                    }
                    None => None,
                };
                let ok = details.as_ref().is_some_and(|d| {
                    matches!(
                        d.reason,
                        UsabilityReason::EnabledByPolicy | UsabilityReason::OneTimeUsed
                    )
                });
                (details, ok)
            }
            (None, _) => (None, true),
            (Some(_), None) => (None, false),
        };
        match user {
            Some(user) if now < session.expires && tap_ok => {
                Ok(Some(Current { session, user, tap }))
            }
            _ => {
                store.delete_web_session(&session.id_hash).await?;
                Ok(None)
            }
        }
    }
}
