//! Server-rendered pages. maud escapes every interpolated value, so a user name or method
//! name can never become markup; the only unescaped content is the QR code SVG this crate
//! draws itself. Pages use one embedded stylesheet and, only where a passkey is involved, one
//! embedded script; forms work without JavaScript. Every input has a label, errors are in
//! `role="alert"` regions.
//!
//! May depend on: `model`, `service::TapDetails`, sibling view types. No I/O.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::security_info::{AppEnrolment, SecurityInfo, INTERRUPT_REFUSAL};
use super::PRODUCT_NAME;
use crate::model::{MethodKind, Timestamp, User, WebAuthMethod, WebSession};
use crate::signin::UsabilityReason;

/// The stylesheet, served at `/assets/tapd.css`.
pub const STYLESHEET: &str = include_str!("assets/tapd.css");
/// The WebAuthn script, served at `/assets/webauthn.js`.
pub const WEBAUTHN_SCRIPT: &str = include_str!("assets/webauthn.js");

/// A message shown above a form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Something went wrong.
    Error(String),
    /// Something worked.
    Success(String),
}

fn notice(notice: Option<&Notice>) -> Markup {
    html! {
        @match notice {
            Some(Notice::Error(text)) => div.notice.error role="alert" { (text) },
            Some(Notice::Success(text)) => div.notice.success role="status" { (text) },
            None => {},
        }
    }
}

/// A time as people read it: `27 Nov 2026, 10:00 UTC`.
pub fn human_time(t: &Timestamp) -> String {
    t.format("%-d %b %Y, %H:%M UTC").to_string()
}

struct Frame<'a> {
    title: &'a str,
    csrf: &'a str,
    user: Option<&'a User>,
    wide: bool,
    script: bool,
}

fn layout(frame: Frame<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light";
                @if !frame.csrf.is_empty() {
                    meta name="csrf-token" content=(frame.csrf);
                }
                title { (frame.title) " · " (PRODUCT_NAME) }
                link rel="stylesheet" href="/assets/tapd.css";
                @if frame.script {
                    script src="/assets/webauthn.js" defer {}
                }
            }
            body {
                header.bar {
                    a.brand href="/" { span.logo aria-hidden="true" { "◆" } (PRODUCT_NAME) }
                    span.section { "Security info" }
                    @if let Some(user) = frame.user {
                        div.who {
                            span.name { (user.display_name) }
                            form method="post" action="/sign-out" {
                                input type="hidden" name="csrf" value=(frame.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main class=(if frame.wide { "card wide" } else { "card" }) {
                    (body)
                }
                footer {
                    "Temporary Access Pass and security info · " (PRODUCT_NAME)
                }
            }
        }
    }
}

fn hidden_csrf(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// The first page: a name, or a passkey.
pub fn sign_in(csrf: &str, note: Option<&Notice>) -> Markup {
    layout(
        Frame {
            title: "Sign in",
            csrf,
            user: None,
            wide: false,
            script: true,
        },
        html! {
            h1 { "Sign in" }
            p.lead { "Sign in to add or manage the ways you prove who you are." }
            (notice(note))
            form method="post" action="/sign-in" {
                (hidden_csrf(csrf))
                label for="username" { "User name or email" }
                input #username type="text" name="username" required autofocus
                    autocomplete="username webauthn" autocapitalize="none" spellcheck="false"
                    placeholder="someone@example.org";
                button.primary type="submit" { "Next" }
            }
            div.divider { span { "or" } }
            div.webauthn {
                button.secondary type="button" data-webauthn="sign-in" {
                    "Sign in with a passkey or security key"
                }
                p.hint.webauthn-status role="alert" aria-live="polite" {}
                noscript { p.hint { "Signing in with a passkey needs JavaScript." } }
            }
        },
    )
}

fn who_line(username: &str) -> Markup {
    let initial: String = username
        .chars()
        .find(|c| c.is_alphanumeric())
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_default();
    html! {
        p.identity {
            span.avatar aria-hidden="true" { (initial) }
            span { (username) }
            a href="/" { "Not you?" }
        }
    }
}

/// The Temporary Access Pass prompt.
pub fn tap_prompt(csrf: &str, username: &str, note: Option<&Notice>) -> Markup {
    layout(
        Frame {
            title: "Enter Temporary Access Pass",
            csrf,
            user: None,
            wide: false,
            script: false,
        },
        html! {
            (who_line(username))
            h1 { "Enter Temporary Access Pass" }
            p.lead { "Enter the Temporary Access Pass your administrator gave you." }
            (notice(note))
            form method="post" action="/sign-in/tap" {
                (hidden_csrf(csrf))
                input type="hidden" name="username" value=(username);
                label for="code" { "Temporary Access Pass" }
                input #code type="text" name="code" required autofocus autocomplete="off"
                    autocapitalize="none" spellcheck="false" maxlength="256";
                button.primary type="submit" { "Sign in" }
            }
            form.alt method="post" action="/sign-in" {
                (hidden_csrf(csrf))
                input type="hidden" name="username" value=(username);
                input type="hidden" name="prefer" value="password";
                button.link type="submit" { "Use your password instead" }
            }
        },
    )
}

/// The directory password prompt.
pub fn password_prompt(csrf: &str, username: &str, note: Option<&Notice>) -> Markup {
    layout(
        Frame {
            title: "Enter password",
            csrf,
            user: None,
            wide: false,
            script: false,
        },
        html! {
            (who_line(username))
            h1 { "Enter password" }
            (notice(note))
            form method="post" action="/sign-in/password" {
                (hidden_csrf(csrf))
                input type="hidden" name="username" value=(username);
                label for="password" { "Password" }
                input #password type="password" name="password" required autofocus
                    autocomplete="current-password" maxlength="256";
                button.primary type="submit" { "Sign in" }
            }
        },
    )
}

/// After the password, for a user who has registered methods.
pub fn second_factor(
    csrf: &str,
    user: &User,
    has_app: bool,
    has_passkey: bool,
    note: Option<&Notice>,
) -> Markup {
    layout(
        Frame {
            title: "Verify your identity",
            csrf,
            user: Some(user),
            wide: false,
            script: has_passkey,
        },
        html! {
            (who_line(&user.user_principal_name))
            h1 { "Verify your identity" }
            p.lead { "You have security info registered. Use it before you change anything." }
            (notice(note))
            @if has_app {
                form method="post" action="/sign-in/verify/code" {
                    (hidden_csrf(csrf))
                    label for="code" { "Code from your authenticator app" }
                    input #code type="text" name="code" required autofocus inputmode="numeric"
                        autocomplete="one-time-code" pattern="[0-9 ]{6,7}" maxlength="7";
                    button.primary type="submit" { "Verify" }
                }
            }
            @if has_passkey {
                @if has_app { div.divider { span { "or" } } }
                div.webauthn {
                    button.secondary type="button" data-webauthn="sign-in" {
                        "Use a passkey or security key"
                    }
                    p.hint.webauthn-status role="alert" aria-live="polite" {}
                }
            }
        },
    )
}

fn method_kind_label(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Fido2 => "Passkey or security key",
        MethodKind::SoftwareOath => "Authenticator app",
    }
}

fn reason_text(reason: UsabilityReason) -> &'static str {
    match reason {
        UsabilityReason::EnabledByPolicy => "Usable now",
        UsabilityReason::DisabledByPolicy => "Blocked by policy",
        UsabilityReason::NotYetValid => "Not valid yet",
        UsabilityReason::Expired => "Expired",
        UsabilityReason::OneTimeUsed => "Used (one-time)",
    }
}

fn signed_in_with(method: WebAuthMethod) -> &'static str {
    match method {
        WebAuthMethod::TemporaryAccessPass => "a Temporary Access Pass",
        WebAuthMethod::Password => "your password",
        WebAuthMethod::PasswordPendingSecondFactor => "your password (not verified yet)",
        WebAuthMethod::PasswordAndSecondFactor => "your password and a second method",
        WebAuthMethod::Passkey => "a passkey",
    }
}

fn session_banner(session: &WebSession, now: Timestamp) -> Markup {
    html! {
        div.session role="status" {
            "You signed in with " (signed_in_with(session.auth_method)) "."
            @if let Some(deadline) = session.registration_deadline {
                @if now < deadline {
                    " Finish registering by " strong { (human_time(&deadline)) } "."
                } @else {
                    " The time to register new methods with this sign-in is over."
                }
            }
            @if let Some(tap_expires) = session.tap_expires {
                " This session ends when your Temporary Access Pass expires, at "
                (human_time(&tap_expires)) "."
            }
        }
    }
}

/// The Security info page.
pub fn security_info(
    csrf: &str,
    user: &User,
    session: &WebSession,
    info: &SecurityInfo,
    note: Option<&Notice>,
) -> Markup {
    layout(
        Frame {
            title: "Security info",
            csrf,
            user: Some(user),
            wide: true,
            script: true,
        },
        html! {
            h1 { "Security info" }
            p.lead {
                "These are the methods you use to sign in as "
                strong { (user.user_principal_name) } "."
            }
            (session_banner(session, info.now))
            (notice(note))
            section aria-labelledby="methods-heading" {
                h2 #methods-heading { "Your methods" }
                @if info.methods.is_empty() {
                    p.empty { "You have no passkey or authenticator app yet. Add one below." }
                } @else {
                    ul.methods {
                        @for method in &info.methods {
                            li.method {
                                div.method-text {
                                    span.kind { (method_kind_label(method.kind)) }
                                    span.label { (method.display_name) }
                                    span.meta { "Added " (human_time(&method.created)) }
                                }
                                form method="post" action={ "/security-info/methods/" (method.id) "/delete" } {
                                    (hidden_csrf(csrf))
                                    button.danger type="submit"
                                        aria-label={ "Delete " (method.display_name) } { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="add-heading" {
                h2 #add-heading { "Add a method" }
                div.add-grid {
                    div.add {
                        h3 { "Passkey or security key" }
                        p { "Sign in with your fingerprint, face, screen lock or a FIDO2 security key." }
                        label for="passkey-name" { "Name (optional)" }
                        input #passkey-name type="text" name="passkey-name" maxlength="64"
                            placeholder="e.g. YubiKey or Work laptop";
                        button.primary type="button" data-webauthn="register" { "Add passkey" }
                        p.hint.webauthn-status role="alert" aria-live="polite" {}
                        noscript { p.hint { "Adding a passkey needs JavaScript." } }
                    }
                    div.add {
                        h3 { "Authenticator app" }
                        p { "Use a code from an app such as Microsoft Authenticator or any TOTP app." }
                        form method="post" action="/security-info/authenticator-app" {
                            (hidden_csrf(csrf))
                            button.primary type="submit" { "Add authenticator app" }
                        }
                    }
                }
            }
            section aria-labelledby="tap-heading" {
                h2 #tap-heading { "Temporary Access Pass" }
                @match &info.tap {
                    None => p.empty { "You have no Temporary Access Pass." },
                    Some(tap) => div.tap {
                        dl {
                            dt { "Status" }
                            dd class=(if tap.is_usable { "ok" } else { "off" }) { (reason_text(tap.reason)) }
                            dt { "Valid from" } dd { (human_time(&tap.tap.start)) }
                            dt { "Valid until" } dd { (human_time(&tap.tap.expires())) }
                            dt { "Use" } dd { (if tap.tap.is_usable_once { "One time" } else { "Several times" }) }
                        }
                        form method="post" action="/security-info/temporary-access-pass/delete" {
                            (hidden_csrf(csrf))
                            button.danger type="submit" { "Delete my Temporary Access Pass" }
                        }
                    },
                }
            }
        },
    )
}

/// Adding an authenticator app: QR code, secret, first code.
pub fn authenticator_app(csrf: &str, user: &User, enrolment: &AppEnrolment) -> Markup {
    let note = enrolment.error.clone().map(Notice::Error);
    layout(
        Frame {
            title: "Add an authenticator app",
            csrf,
            user: Some(user),
            wide: false,
            script: false,
        },
        html! {
            h1 { "Add an authenticator app" }
            ol.steps {
                li { "Open your authenticator app and add an account (choose “other” or “work or school”)." }
                li { "Scan this QR code, or type the key below." }
                li { "Enter the 6-digit code the app shows." }
            }
            figure.qr {
                (PreEscaped(&enrolment.qr_svg))
                figcaption { "QR code for your authenticator app" }
            }
            p.secret-line {
                "Key: " code #totp-secret { (enrolment.secret) }
            }
            details {
                summary { "Setup link" }
                p { a href=(enrolment.uri) { "Open in an authenticator app on this device" } }
            }
            (notice(note.as_ref()))
            form method="post" action="/security-info/authenticator-app/confirm" {
                (hidden_csrf(csrf))
                input type="hidden" name="ceremony" value=(enrolment.ceremony_id);
                label for="app-name" { "Name (optional)" }
                input #app-name type="text" name="name" maxlength="64" placeholder="Authenticator app";
                label for="code" { "6-digit code" }
                input #code type="text" name="code" required autofocus inputmode="numeric"
                    autocomplete="one-time-code" pattern="[0-9 ]{6,7}" maxlength="7";
                button.primary type="submit" { "Add" }
            }
            p { a href="/" { "Cancel" } }
        },
    )
}

/// The registration wizard of interrupt mode.
pub fn interrupt_wizard(
    csrf: &str,
    user: &User,
    session: &WebSession,
    info: &SecurityInfo,
    note: Option<&Notice>,
) -> Markup {
    let has_app = info
        .methods
        .iter()
        .any(|m| m.kind == MethodKind::SoftwareOath);
    layout(
        Frame {
            title: "Keep your account secure",
            csrf,
            user: Some(user),
            wide: false,
            script: false,
        },
        html! {
            h1 { "Keep your account secure" }
            p.lead { "Your organization requires you to set up the following methods of proving who you are." }
            (session_banner(session, info.now))
            (notice(note))
            @if has_app {
                div.notice.success role="status" {
                    "Your authenticator app is registered. You're all set; you can sign out now."
                }
            } @else {
                div.add {
                    h2 { "Authenticator app" }
                    p { "Start by adding an authenticator app." }
                    form method="post" action="/security-info/authenticator-app" {
                        (hidden_csrf(csrf))
                        button.primary type="submit" { "Add authenticator app" }
                    }
                }
            }
            div.unavailable {
                h2 { "Security key, passkey or phone sign-in" }
                p { (INTERRUPT_REFUSAL) }
            }
        },
    )
}

/// A page with a title and a message (errors, signed out).
pub fn message(csrf: &str, title: &str, text: &str, error: bool) -> Markup {
    layout(
        Frame {
            title,
            csrf,
            user: None,
            wide: false,
            script: false,
        },
        html! {
            h1 { (title) }
            @if error {
                div.notice.error role="alert" { (text) }
            } @else {
                p.lead role="status" { (text) }
            }
            p { a.button href="/" { "Back to sign-in" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let page = tap_prompt(
            "tok\"en",
            "<script>alert(1)</script>",
            Some(&Notice::Error("a&b".into())),
        );
        let html = page.into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("tok&quot;en"));
        assert!(html.contains("a&amp;b"));
        assert!(html.contains(r#"<label for="code">"#));
    }
}
