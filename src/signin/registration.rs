//! What a signed-in user may see and change on their Security info page, without HTTP: their
//! methods and TAP, adding a passkey or an authenticator app, deleting a method or their own
//! TAP (the methods of a [`Registration`], a capability only a fully signed-in session gets),
//! signing out.
//!
//! Registration windows (DESIGN §2): after a one-time TAP sign-in every registration must
//! start and finish within 10 minutes of the sign-in; with a multi-use TAP the 10 minutes
//! start again whenever a new registration starts. Interrupt mode (a TAP sign-in by a member
//! of a registration-interrupt group) refuses FIDO2 and phone sign-in registration with
//! [`INTERRUPT_REFUSAL`], as Entra's interrupt mode does. A session still owing its second
//! factor gets no [`Registration`], so it can see and change nothing.
//!
//! Every change is written with its audit event ("User registered security info", "User
//! deleted security info") in one store call.
//!
//! May depend on: `service`, `store`, `model`, and the sibling building blocks.

use serde_json::json;
use webauthn_rs::prelude::{
    CreationChallengeResponse, PasskeyRegistration, RegisterPublicKeyCredential,
};

use super::passkeys::method_id_for_credential;
use super::session::{random_token, CEREMONY_LIFETIME, REGISTRATION_WINDOW};
use super::site::{activity, method_name, Failure, SelfService, Source};
use super::totp::{self, StoredTotp};
use super::web::Current;
use crate::model::{
    AuditResult, CeremonyKind, MethodKind, NewAuditEvent, RegisteredMethod, Timestamp, WebCeremony,
    WebSession,
};
use crate::service::TapDetails;

/// What interrupt mode answers to a security key, passkey or phone sign-in registration
/// (Entra: "This experience doesn't currently support FIDO2 and phone sign-in registration").
pub const INTERRUPT_REFUSAL: &str = "Security keys and passkeys (FIDO2) and phone sign-in \
    can't be registered in this step. Your organization asks you to register security info \
    now: add an authenticator app. You can add a security key or passkey later on your \
    Security info page.";

/// Why registering is closed after a one-time TAP sign-in.
pub const WINDOW_CLOSED: &str = "The 10 minutes to register a method after signing in with a \
    one-time Temporary Access Pass are over. Sign in again with a method you registered, or \
    ask your administrator for a new Temporary Access Pass.";

/// Why a registration that took too long is refused.
pub const REGISTRATION_TOO_SLOW: &str =
    "This registration took longer than 10 minutes. Start it again.";

/// Longest name a user may give a method.
const MAX_METHOD_NAME_CHARS: usize = 64;

/// Everything the Security info page shows.
#[derive(Clone, Debug)]
pub struct SecurityInfo {
    /// Registered methods, oldest first.
    pub methods: Vec<RegisteredMethod>,
    /// The user's TAP, with its usability now.
    pub tap: Option<TapDetails>,
    /// When the page was computed.
    pub now: Timestamp,
}

/// An authenticator app being added: the secret is shown until a valid code confirms it.
#[derive(Clone, Debug)]
pub struct AppEnrolment {
    /// The ceremony the confirmation must name.
    pub ceremony_id: String,
    /// The secret, base32, for typing into an app.
    pub secret: String,
    /// The `otpauth://` URI.
    pub uri: String,
    /// Its QR code, an SVG element.
    pub qr_svg: String,
    /// Why the previous code was refused, if it was.
    pub error: Option<String>,
}

/// A passkey registration the browser must answer.
#[derive(Debug)]
pub struct PasskeyRegistrationChallenge {
    /// The server-side ceremony the answer must name.
    pub ceremony_id: String,
    /// `navigator.credentials.create` options.
    pub options: CreationChallengeResponse,
}

/// A method the signed-in user registers now, its secret state stored as JSON.
fn new_method(
    current: &Current,
    id: String,
    kind: MethodKind,
    display_name: String,
    data: &impl serde::Serialize,
    now: Timestamp,
) -> Result<RegisteredMethod, Failure> {
    Ok(RegisteredMethod {
        id,
        user_id: current.user.id.clone(),
        kind,
        display_name,
        created: now,
        data: serde_json::to_string(data).map_err(Failure::internal)?,
    })
}

/// A method's display name: trimmed, at most [`MAX_METHOD_NAME_CHARS`], `default` when empty.
fn method_display_name(typed: Option<&str>, default: &str) -> String {
    let name: String = typed
        .unwrap_or("")
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_METHOD_NAME_CHARS)
        .collect();
    if name.is_empty() {
        default.to_owned()
    } else {
        name
    }
}

/// Self-service registration for one fully signed-in session: the only way to see or change
/// a user's own methods and TAP. Obtained from [`SelfService::registration`] with the
/// [`Current`] session of the request (which only [`SelfService::current`] makes, from the
/// session cookie), so no front end can register or delete anything for a user without that
/// user's session; a session still owing its second factor gets none. The registration window
/// and interrupt mode are checked by each operation, at its time.
pub struct Registration<'a> {
    signin: &'a SelfService,
    current: &'a Current,
}

impl SelfService {
    /// The registration operations for `current`'s user; refused with
    /// [`Failure::SignInRequired`] while the session still owes its second factor.
    pub fn registration<'a>(&'a self, current: &'a Current) -> Result<Registration<'a>, Failure> {
        if current.is_pending() {
            return Err(Failure::SignInRequired);
        }
        Ok(Registration {
            signin: self,
            current,
        })
    }

    /// The audit event of what `current`'s user did to their own account: a change to their
    /// security info, or signing out.
    fn own_change(
        &self,
        activity: &str,
        current: &Current,
        source: &Source,
        details: serde_json::Value,
    ) -> NewAuditEvent {
        self.web_event(
            activity,
            &current.user.user_principal_name,
            AuditResult::Success,
            None,
            source,
            details,
        )
    }

    /// Checks the registration window before a registration starts, restarting it for a
    /// multi-use TAP; returns the session as it now stands.
    async fn open_registration(
        &self,
        current: &Current,
        now: Timestamp,
    ) -> Result<WebSession, Failure> {
        let mut session = current.session.clone();
        let one_time = current.tap.as_ref().is_some_and(|t| t.tap.is_usable_once);
        if one_time {
            if session
                .registration_deadline
                .is_none_or(|deadline| now >= deadline)
            {
                return Err(Failure::Forbidden(WINDOW_CLOSED.to_owned()));
            }
        } else if session.tap_id.is_some() {
            session.registration_deadline = Some(now + REGISTRATION_WINDOW);
            if !self.service.store().update_web_session(&session).await? {
                return Err(Failure::SignInRequired);
            }
        }
        Ok(session)
    }

    /// Checks that a registration may finish now.
    fn check_registration_open(current: &Current, now: Timestamp) -> Result<(), Failure> {
        let one_time = current.tap.as_ref().is_some_and(|t| t.tap.is_usable_once);
        match current.session.registration_deadline {
            Some(deadline) if now >= deadline => Err(Failure::Forbidden(if one_time {
                WINDOW_CLOSED.to_owned()
            } else {
                REGISTRATION_TOO_SLOW.to_owned()
            })),
            _ => Ok(()),
        }
    }

    /// A ceremony of this session, ending with the window, the session or after
    /// [`CEREMONY_LIFETIME`], whichever comes first.
    async fn put_ceremony(
        &self,
        session: &WebSession,
        kind: CeremonyKind,
        state: String,
        now: Timestamp,
    ) -> Result<String, Failure> {
        let mut expires = (now + CEREMONY_LIFETIME).min(session.expires);
        if let Some(deadline) = session.registration_deadline {
            expires = expires.min(deadline);
        }
        let ceremony = WebCeremony {
            id: random_token(),
            kind,
            session_id_hash: Some(session.id_hash.clone()),
            state,
            created: now,
            expires,
        };
        // Each start is a store row: a bounded number outstanding per user.
        if !self
            .ceremonies
            .start(&format!("user:{}", session.user_id), now, expires)
        {
            return Err(Failure::TooManyRequests(
                "Too many registrations were started and not finished. Finish one, or try again \
                 in a few minutes."
                    .to_owned(),
            ));
        }
        self.service
            .store()
            .put_web_ceremony(&ceremony, now)
            .await?;
        Ok(ceremony.id)
    }

    /// Takes this session's ceremony of `kind`, if it is still valid.
    async fn take_ceremony(
        &self,
        current: &Current,
        ceremony_id: &str,
        kind: CeremonyKind,
        now: Timestamp,
    ) -> Result<WebCeremony, Failure> {
        let taken = self.service.store().take_web_ceremony(ceremony_id).await?;
        if taken
            .as_ref()
            .is_some_and(|c| c.session_id_hash.as_deref() == Some(current.session.id_hash.as_str()))
        {
            self.ceremonies
                .finish(&format!("user:{}", current.session.user_id));
        }
        taken
            .filter(|c| {
                c.kind == kind
                    && c.session_id_hash.as_deref() == Some(current.session.id_hash.as_str())
                    && now < c.expires
            })
            .ok_or_else(|| {
                Failure::Forbidden(
                    "This registration is no longer valid (it expired or was already used). Start it again."
                        .to_owned(),
                )
            })
    }

    async fn save_method(
        &self,
        current: &Current,
        method: &RegisteredMethod,
        method_type: &str,
        source: &Source,
    ) -> Result<(), Failure> {
        let event = self.own_change(
            activity::REGISTERED,
            current,
            source,
            json!({
                "category": "UserManagement",
                "resultReason": format!("User registered {} method", method_type),
                "methodType": method_type,
                "methodId": method.id,
                "displayName": method.display_name,
                "signedInWith": current.session.auth_method.as_str(),
            }),
        );
        self.service.store().add_method(method, &event).await?;
        crate::audit::log(&event);
        Ok(())
    }

    fn app_enrolment(
        &self,
        current: &Current,
        ceremony_id: String,
        secret: &[u8],
        error: Option<String>,
    ) -> Result<AppEnrolment, Failure> {
        let issuer = format!(
            "{} ({})",
            super::site::PRODUCT_NAME,
            self.settings.public_url.host()
        );
        let uri = totp::otpauth_uri(&issuer, &current.user.user_principal_name, secret);
        let qr_svg = totp::qr_svg(&uri).map_err(Failure::internal)?;
        Ok(AppEnrolment {
            ceremony_id,
            secret: totp::base32_encode(secret),
            uri,
            qr_svg,
            error,
        })
    }

    /// Ends the session.
    pub async fn sign_out(&self, current: &Current, source: &Source) -> Result<(), Failure> {
        self.service
            .store()
            .delete_web_session(&current.session.id_hash)
            .await?;
        let event = self.own_change(activity::SIGNED_OUT, current, source, json!({}));
        crate::audit::log(&event);
        self.service.store().append_audit(&event).await?;
        Ok(())
    }
}

impl Registration<'_> {
    /// What the Security info page shows.
    pub async fn security_info(&self) -> Result<SecurityInfo, Failure> {
        let (signin, current) = (self.signin, self.current);
        let store = signin.service.store();
        let methods = store.methods(&current.user.id).await?;
        // A TAP session already looked its TAP up for this request.
        let tap = match &current.tap {
            Some(details) => Some(details.clone()),
            None => match store.tap_for_user(&current.user.id).await? {
                Some(tap) => Some(signin.service.tap_details(&current.user, tap).await?),
                None => None,
            },
        };
        Ok(SecurityInfo {
            methods,
            tap,
            now: signin.now(),
        })
    }

    /// Starts registering a passkey or security key; refused in interrupt mode.
    pub async fn start_passkey_registration(
        &self,
    ) -> Result<PasskeyRegistrationChallenge, Failure> {
        let (signin, current) = (self.signin, self.current);
        if current.session.interrupt_mode {
            return Err(Failure::Forbidden(INTERRUPT_REFUSAL.to_owned()));
        }
        let now = signin.now();
        let session = signin.open_registration(current, now).await?;
        let existing = signin.passkeys_of(&current.user).await?;
        let (options, state) = signin
            .passkeys
            .start_registration(&current.user, &existing)
            .map_err(Failure::internal)?;
        let state = serde_json::to_string(&state).map_err(Failure::internal)?;
        let ceremony_id = signin
            .put_ceremony(&session, CeremonyKind::PasskeyRegistration, state, now)
            .await?;
        Ok(PasskeyRegistrationChallenge {
            ceremony_id,
            options,
        })
    }

    /// Finishes a passkey registration: verified against the stored challenge, the origin
    /// and user verification, and saved with its audit event.
    pub async fn finish_passkey_registration(
        &self,
        ceremony_id: &str,
        name: Option<&str>,
        response: &RegisterPublicKeyCredential,
        source: &Source,
    ) -> Result<RegisteredMethod, Failure> {
        let (signin, current) = (self.signin, self.current);
        let now = signin.now();
        SelfService::check_registration_open(current, now)?;
        if current.session.interrupt_mode {
            return Err(Failure::Forbidden(INTERRUPT_REFUSAL.to_owned()));
        }
        let ceremony = signin
            .take_ceremony(current, ceremony_id, CeremonyKind::PasskeyRegistration, now)
            .await?;
        let state: PasskeyRegistration = serde_json::from_str(&ceremony.state)
            .map_err(|e| Failure::internal_in("ceremony state", e))?;
        let passkey = match signin.passkeys.finish_registration(response, &state) {
            Ok(passkey) => passkey,
            Err(e) => {
                let event = signin.web_event(
                    activity::REGISTERED,
                    &current.user.user_principal_name,
                    AuditResult::Failure,
                    Some("passkey_refused"),
                    source,
                    json!({ "methodType": method_name::PASSKEY, "error": e.to_string() }),
                );
                crate::audit::log(&event);
                signin.service.store().append_audit(&event).await?;
                return Err(Failure::Forbidden(
                    "The passkey could not be verified, so it was not added. Try again.".to_owned(),
                ));
            }
        };
        let method_id = method_id_for_credential(passkey.cred_id());
        if signin.service.store().method(&method_id).await?.is_some() {
            return Err(Failure::Forbidden(
                "This passkey or security key is already registered.".to_owned(),
            ));
        }
        let method = new_method(
            current,
            method_id,
            MethodKind::Fido2,
            method_display_name(name, "Passkey"),
            &passkey,
            now,
        )?;
        signin
            .save_method(current, &method, method_name::PASSKEY, source)
            .await?;
        Ok(method)
    }

    /// Starts adding an authenticator app: a new secret, kept server-side until confirmed.
    pub async fn start_authenticator_app(&self) -> Result<AppEnrolment, Failure> {
        let (signin, current) = (self.signin, self.current);
        let now = signin.now();
        let session = signin.open_registration(current, now).await?;
        let secret = totp::generate_secret();
        let state = serde_json::to_string(&StoredTotp {
            secret: totp::base32_encode(&secret),
            last_used_step: None,
        })
        .map_err(Failure::internal)?;
        let ceremony_id = signin
            .put_ceremony(&session, CeremonyKind::TotpEnrolment, state, now)
            .await?;
        signin.app_enrolment(current, ceremony_id, &secret, None)
    }

    /// Confirms an authenticator app with its first code; the app is saved only then. A wrong
    /// code gives the same secret back to try again (within the ceremony's lifetime and the
    /// throttle).
    pub async fn confirm_authenticator_app(
        &self,
        ceremony_id: &str,
        code: &str,
        name: Option<&str>,
        source: &Source,
    ) -> Result<Result<RegisteredMethod, AppEnrolment>, Failure> {
        let (signin, current) = (self.signin, self.current);
        let now = signin.now();
        SelfService::check_registration_open(current, now)?;
        let ceremony = signin
            .take_ceremony(current, ceremony_id, CeremonyKind::TotpEnrolment, now)
            .await?;
        let mut pending: StoredTotp = serde_json::from_str(&ceremony.state)
            .map_err(|e| Failure::internal_in("ceremony state", e))?;
        let secret = pending.secret_bytes().map_err(Failure::internal)?;
        let key = format!("id:{}", current.user.id);
        let throttled = signin.throttle.check(&key, source.ip, now).err();
        let step = match throttled {
            Some(_) => None,
            None => totp::verify(&secret, code, now, None),
        };
        let Some(step) = step else {
            if throttled.is_none() {
                signin.throttle.record_failure(&key, source.ip, now);
            }
            let message = match throttled {
                Some(t) => super::web::Refusal::Throttled(t).message(""),
                None => {
                    "That code didn't work. Enter the 6-digit code your app shows now.".to_owned()
                }
            };
            // Same secret, new single-use ceremony id, same end.
            let retry = WebCeremony {
                id: random_token(),
                created: now,
                ..ceremony
            };
            signin.service.store().put_web_ceremony(&retry, now).await?;
            return Ok(Err(signin.app_enrolment(
                current,
                retry.id,
                &secret,
                Some(message),
            )?));
        };
        signin.throttle.record_success(&key, source.ip);
        pending.last_used_step = Some(step);
        let method = new_method(
            current,
            uuid::Uuid::new_v4().to_string(),
            MethodKind::SoftwareOath,
            method_display_name(name, "Authenticator app"),
            &pending,
            now,
        )?;
        signin
            .save_method(current, &method, method_name::AUTHENTICATOR_APP, source)
            .await?;
        Ok(Ok(method))
    }

    /// Deletes one of the user's own methods.
    pub async fn delete_own_method(&self, method_id: &str, source: &Source) -> Result<(), Failure> {
        let (signin, current) = (self.signin, self.current);
        let event = signin.own_change(
            activity::DELETED,
            current,
            source,
            json!({ "category": "UserManagement", "methodId": method_id }),
        );
        if !signin
            .service
            .store()
            .delete_method(&current.user.id, method_id, &event)
            .await?
        {
            return Err(Failure::BadRequest(
                "That method is not registered (any more).".to_owned(),
            ));
        }
        crate::audit::log(&event);
        Ok(())
    }

    /// Deletes the user's own TAP. A session that began with that TAP ends with it.
    pub async fn delete_own_tap(&self, source: &Source) -> Result<bool, Failure> {
        let (signin, current) = (self.signin, self.current);
        let store = signin.service.store();
        let Some(tap) = store.tap_for_user(&current.user.id).await? else {
            return Err(Failure::BadRequest(
                "You have no Temporary Access Pass.".to_owned(),
            ));
        };
        let event = signin.own_change(
            activity::DELETED,
            current,
            source,
            json!({
                "category": "UserManagement",
                "resultReason": "User deleted temporary access pass method",
                "TemporaryAccessPass.Id": tap.id,
            }),
        );
        if !store.delete_tap(&current.user.id, &tap.id, &event).await? {
            return Err(Failure::BadRequest(
                "You have no Temporary Access Pass.".to_owned(),
            ));
        }
        crate::audit::log(&event);
        let session_ends = current.session.tap_id.as_deref() == Some(tap.id.as_str());
        if session_ends {
            store.delete_web_session(&current.session.id_hash).await?;
        }
        Ok(session_ends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_trimmed_bounded_and_defaulted() {
        assert_eq!(method_display_name(None, "Passkey"), "Passkey");
        assert_eq!(method_display_name(Some("  "), "Passkey"), "Passkey");
        assert_eq!(
            method_display_name(Some(" YubiKey\n5 "), "Passkey"),
            "YubiKey5"
        );
        assert_eq!(method_display_name(Some(&"x".repeat(100)), "P").len(), 64);
    }
}
