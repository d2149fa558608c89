//! Domain types shared by every layer: users and groups as synced from the directory, the
//! Temporary Access Pass policy, stored TAPs, registered methods, audit events and sync status.
//!
//! This module depends on nothing but serde and chrono. The policy engine (`crate::policy`)
//! reasons over these types; the store persists them; the front ends render them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The fixed id Graph gives the password method (the same in every tenant).
pub const PASSWORD_METHOD_ID: &str = "28c10230-6103-485e-b985-444c60001490";

/// A point in time, always UTC.
pub type Timestamp = DateTime<Utc>;

/// A directory user as tapd knows it after a sync, keyed by its stable id
/// (entryUUID / nsUniqueId / objectGUID), never by DN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable directory id; survives renames and moves.
    pub id: String,
    /// Current distinguished name (changes on rename / move).
    pub dn: String,
    /// Login name (`uid`, `sAMAccountName`).
    pub username: String,
    /// userPrincipalName (for OpenLDAP: `mail` or `uid@domain`).
    pub user_principal_name: String,
    /// Human-readable name (`cn` / `displayName`).
    pub display_name: String,
    /// Mail address, when the directory has one.
    pub mail: Option<String>,
    /// False when the directory account is disabled or locked.
    pub account_enabled: bool,
    /// Ids of every group the user is a member of, transitively (nested groups resolved),
    /// sorted and de-duplicated.
    pub group_ids: Vec<String>,
    /// Set by the store, never by the directory: a sign-in name this user claims is claimed by
    /// another user too, so this user is quarantined (no sign-in on any channel, no new TAP)
    /// until the directory is fixed. See [`IdentityConflict`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_conflict: Option<IdentityConflict>,
    /// The DN in the entry's `manager` attribute, normalised (`crate::dn::normalize_dn`), as
    /// the directory wrote it; `None` when the entry names no manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_dn: Option<String>,
    /// Set by the store, never by the directory: the stable id of the synced user whose
    /// normalised DN is exactly [`User::manager_dn`], resolved after each sync. `None` when
    /// there is no manager or it is no synced user (outside the synced base, or not found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_id: Option<String>,
    /// Dates read from the date attributes onboarding rules ask for (`date_attribute`), keyed
    /// by the attribute name in lower case; a value that does not parse is left out.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dates: std::collections::BTreeMap<String, chrono::NaiveDate>,
}

impl User {
    /// Whether `other` holds the same directory data: every field but the store's own
    /// [`User::identity_conflict`] and [`User::manager_id`], which the directory never sets.
    pub fn same_directory_entry(&self, other: &User) -> bool {
        let User {
            id,
            dn,
            username,
            user_principal_name,
            display_name,
            mail,
            account_enabled,
            group_ids,
            identity_conflict: _,
            manager_dn,
            manager_id: _,
            dates,
        } = self;
        *id == other.id
            && *dn == other.dn
            && *username == other.username
            && *user_principal_name == other.user_principal_name
            && *display_name == other.display_name
            && *mail == other.mail
            && *account_enabled == other.account_enabled
            && *group_ids == other.group_ids
            && *manager_dn == other.manager_dn
            && *dates == other.dates
    }
}

/// What the store holds of one user for resolving managers: its DN, and the `manager` DN of
/// its entry with the id that DN was last resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerLink {
    /// Stable directory id.
    pub id: String,
    /// Current distinguished name, as the directory spelled it.
    pub dn: String,
    /// userPrincipalName (for log lines).
    pub user_principal_name: String,
    /// [`User::manager_dn`].
    pub manager_dn: Option<String>,
    /// [`User::manager_id`] as stored.
    pub manager_id: Option<String>,
}

/// Why a user is quarantined: sign-in names (usernames and userPrincipalNames, compared
/// case-insensitively across all users) are keys, and one of this user's names is also
/// another user's. The user that held the name first keeps it; every later claimant is
/// quarantined. When all claimants appeared in the same sync, none is preferred and all are
/// quarantined. Nothing is guessed: a name lookup never picks "the first row".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityConflict {
    /// Each contested name of this user (at least one).
    pub names: Vec<NameConflict>,
}

/// One contested sign-in name of a quarantined user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NameConflict {
    /// The name, folded (see [`name_key`]).
    pub name: String,
    /// Which attribute of this user claims it: `username` or `userPrincipalName`.
    pub attribute: String,
    /// The user that established the name first and keeps it, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<NameClaimant>,
    /// The other users that claim it too and are quarantined with this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_claimed_by: Vec<NameClaimant>,
}

/// A user named in a [`NameConflict`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NameClaimant {
    /// Stable directory id.
    pub id: String,
    /// Distinguished name at the sync that found the conflict.
    pub dn: String,
    /// Login name.
    pub username: String,
}

impl IdentityConflict {
    /// One line for logs, errors and `tapctl`: which names, and who else claims them.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .names
            .iter()
            .map(|n| {
                let who = match &n.held_by {
                    Some(holder) => format!("held by {} ({})", holder.username, holder.dn),
                    None => {
                        let others: Vec<String> = n
                            .also_claimed_by
                            .iter()
                            .map(|c| format!("{} ({})", c.username, c.dn))
                            .collect();
                        format!("also claimed by {}", others.join(", "))
                    }
                };
                format!("{} {:?} is {who}", n.attribute, n.name)
            })
            .collect();
        parts.join("; ")
    }
}

/// The form in which sign-in names are compared: ASCII letters in lower case, every other
/// character as it is (so `Alice`, `ALICE` and `alice` are one name on both backends, as their
/// `lower()` would have it). The store keeps every user's names in this form, and a typed name
/// is folded the same way before it is looked up.
pub fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A directory group, keyed by its stable id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Stable directory id.
    pub id: String,
    /// Current distinguished name.
    pub dn: String,
    /// `cn` of the group.
    pub display_name: String,
    /// Ids of the users that are members, directly or through nested groups, sorted.
    pub member_user_ids: Vec<String>,
}

/// A group as a sign-in needs it: which group it is, not who else is in it. Loading the member
/// lists of every group of a user on each RADIUS accept was most of the accept path's cost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    /// Stable directory id.
    pub id: String,
    /// Current distinguished name.
    pub dn: String,
    /// `cn` of the group.
    pub display_name: String,
}

impl From<&Group> for GroupRef {
    fn from(group: &Group) -> Self {
        GroupRef {
            id: group.id.clone(),
            dn: group.dn.clone(),
            display_name: group.display_name.clone(),
        }
    }
}

/// Whether the TAP method is switched on for the installation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PolicyState {
    /// Users in scope may sign in with a TAP.
    Enabled,
    /// Nobody may sign in with a TAP (admins may still create them).
    Disabled,
}

/// What a policy target points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TargetType {
    /// A single user, named by id, username or userPrincipalName.
    User,
    /// A group (nested membership counts), named by id, DN or unique cn (see
    /// `crate::group_ref`); `all_users` is everyone.
    Group,
}

/// An entry of `includeTargets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IncludeTarget {
    /// Group or user reference; `all_users` is the pseudo-group of every user.
    pub id: String,
    /// User or group.
    pub target_type: TargetType,
    /// Graph field, kept for shape compatibility.
    #[serde(default)]
    pub is_registration_required: bool,
}

/// An entry of `excludeTargets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExcludeTarget {
    /// Group or user reference.
    pub id: String,
    /// User or group.
    pub target_type: TargetType,
}

/// The one Temporary Access Pass policy of an installation (Graph's
/// `temporaryAccessPassAuthenticationMethodConfiguration`). Ranges are checked by
/// `crate::policy::validate_policy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapPolicy {
    /// Enabled or disabled.
    pub state: PolicyState,
    /// Lower bound for a TAP's lifetime, 10..=43200.
    pub minimum_lifetime_in_minutes: u32,
    /// Upper bound for a TAP's lifetime, 10..=43200 and >= minimum.
    pub maximum_lifetime_in_minutes: u32,
    /// Lifetime used when a create request names none; within [minimum, maximum].
    pub default_lifetime_in_minutes: u32,
    /// Length of generated codes, 8..=48.
    pub default_length: u32,
    /// When true every new TAP is one-time and multi-use TAPs are blocked at sign-in.
    pub is_usable_once: bool,
    /// Who is in scope.
    pub include_targets: Vec<IncludeTarget>,
    /// Who is out of scope even when included; exclusion wins.
    pub exclude_targets: Vec<ExcludeTarget>,
}

/// The pseudo-group id that includes every user.
pub const ALL_USERS: &str = "all_users";

impl Default for TapPolicy {
    /// Entra's defaults: disabled, 60/480/60 minutes, length 8, multi-use allowed, all users.
    fn default() -> Self {
        TapPolicy {
            state: PolicyState::Disabled,
            minimum_lifetime_in_minutes: 60,
            maximum_lifetime_in_minutes: 480,
            default_lifetime_in_minutes: 60,
            default_length: 8,
            is_usable_once: false,
            include_targets: vec![IncludeTarget {
                id: ALL_USERS.to_owned(),
                target_type: TargetType::Group,
                is_registration_required: false,
            }],
            exclude_targets: Vec::new(),
        }
    }
}

/// A TAP as stored: the code itself is never kept, only its argon2id hash (PHC string).
///
/// Lifecycle (evaluated at a given `now` by `crate::policy::usability`):
///
/// ```text
///   created ──(now < start)──> NotYetValid ──(start ≤ now)──> usable ──(now ≥ start+lifetime)──> Expired
///                                                               │
///                                       one-time: first web sign-in (atomic) ──> OneTimeUsed
///   any state ──(admin or user deletes, new TAP created, account deleted/disabled)──> gone
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTap {
    /// Random UUID.
    pub id: String,
    /// Owner's stable user id.
    pub user_id: String,
    /// argon2id PHC hash of the code.
    pub code_hash: String,
    /// When it was created.
    pub created: Timestamp,
    /// When it becomes usable.
    pub start: Timestamp,
    /// Minutes from `start` until it expires.
    pub lifetime_in_minutes: u32,
    /// One-time or multi-use.
    pub is_usable_once: bool,
    /// When a one-time TAP was consumed; `None` while unused.
    pub used_at: Option<Timestamp>,
    /// Characters in the code, recorded at creation so that a credential of another length
    /// is known not to be this TAP without hashing it; `None` for TAPs created before it was
    /// recorded (any TAP length is then possible).
    pub code_length: Option<u32>,
}

impl StoredTap {
    /// The first instant at which the TAP is no longer usable.
    pub fn expires(&self) -> Timestamp {
        self.start + chrono::Duration::minutes(i64::from(self.lifetime_in_minutes))
    }
}

/// Kinds of registered authentication method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MethodKind {
    /// A FIDO2 security key or passkey (WebAuthn credential).
    Fido2,
    /// An authenticator app (TOTP, RFC 6238).
    SoftwareOath,
}

impl MethodKind {
    /// The stable string used in the store and in Graph's `@odata.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::Fido2 => "fido2",
            MethodKind::SoftwareOath => "softwareOath",
        }
    }
}

/// A strong method the user registered on the web page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredMethod {
    /// Random UUID.
    pub id: String,
    /// Owner's stable user id.
    pub user_id: String,
    /// FIDO2 or TOTP.
    pub kind: MethodKind,
    /// Name shown to the user ("YubiKey 5", "Authenticator app").
    pub display_name: String,
    /// When it was registered.
    pub created: Timestamp,
    /// Method-specific data (serialized WebAuthn credential, TOTP secret), opaque to the store.
    pub data: String,
}

/// The channel an event or sign-in came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Channel {
    /// The local admin socket.
    Admin,
    /// Directory synchronisation.
    Sync,
    /// RADIUS (NPS-extension-style) path.
    Radius,
    /// Federation (AD FS-adapter-style) path.
    Federation,
    /// The web registration page.
    Web,
}

impl Channel {
    /// Lower-case name used in logs, metrics and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Admin => "admin",
            Channel::Sync => "sync",
            Channel::Radius => "radius",
            Channel::Federation => "federation",
            Channel::Web => "web",
        }
    }

    /// Parses what `as_str` produced.
    pub fn parse(s: &str) -> Option<Channel> {
        [
            Channel::Admin,
            Channel::Sync,
            Channel::Radius,
            Channel::Federation,
            Channel::Web,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// Outcome recorded in an audit event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuditResult {
    /// The action took effect / the sign-in succeeded.
    Success,
    /// The action was refused / the sign-in failed.
    Failure,
}

/// An audit event before the store has given it an id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewAuditEvent {
    /// When it happened.
    pub time: Timestamp,
    /// Who acted: a UPN, `root (uid 0)`, `tapd` for the daemon itself, or the RADIUS client.
    pub actor: String,
    /// Entra-style activity name ("Admin registered temporary access pass method for user").
    pub activity: String,
    /// The user (UPN) or object acted upon, if any.
    pub target: Option<String>,
    /// Success or failure.
    pub result: AuditResult,
    /// Stable reason code (`tap_expired`, `forbidden`, …) when there is one.
    pub reason_code: Option<String>,
    /// Where it came from.
    pub channel: Channel,
    /// Peer address (IP:port, or `uid=N pid=M` on the admin socket).
    pub source_address: Option<String>,
    /// Extra structured detail (TAP id, start, end, usage…); never a secret.
    pub details: serde_json::Value,
}

/// An audit event as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Monotonic id assigned by the store.
    pub id: i64,
    /// The event.
    #[serde(flatten)]
    pub event: NewAuditEvent,
}

/// Which audit events to return, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events before this time.
    pub until: Option<Timestamp>,
    /// Only events whose actor or target equals this (case-insensitive).
    pub user: Option<String>,
    /// Only events whose activity contains this (case-insensitive).
    pub activity: Option<String>,
    /// At most this many events.
    pub limit: u32,
}

/// How the last directory sync went, as shown by `GET /v1/directory/sync`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// When the last run started.
    pub last_run_started: Option<Timestamp>,
    /// When it finished.
    pub last_run_finished: Option<Timestamp>,
    /// How long it took.
    pub last_run_duration_ms: Option<u64>,
    /// `success`, `failed` or `deletionsRefused`.
    pub last_result: Option<String>,
    /// When a run last succeeded.
    pub last_success: Option<Timestamp>,
    /// What went wrong last time, if it did.
    pub last_error: Option<String>,
    /// Users / groups seen in the directory by the last successful run.
    pub users_seen: u64,
    /// Groups seen.
    pub groups_seen: u64,
    /// Changes applied by the last successful run.
    pub users_added: u64,
    /// Users whose attributes or memberships changed.
    pub users_updated: u64,
    /// Users removed.
    pub users_deleted: u64,
    /// Deletions the guard refused on the last run (0 when none).
    pub deletions_refused: u64,
    /// When the next scheduled run is due.
    pub next_run: Option<Timestamp>,
    /// The tapd node that ran the last sync (several nodes may share one store).
    #[serde(default)]
    pub node: Option<String>,
    /// Who started the last sync: `tapd` for the daemon's own runs (at start and on
    /// schedule), the administrator for `tapctl sync run`.
    #[serde(default)]
    pub initiated_by: Option<String>,
    /// Users quarantined by an identity conflict now, one line each (read live from the
    /// store's users when the status is shown, never stored).
    #[serde(default, skip_serializing)]
    pub identity_conflicts: Vec<String>,
}

/// How a web session was signed in; decides what the session may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WebAuthMethod {
    /// Signed in with a Temporary Access Pass: may register and manage methods (bounded by the
    /// TAP's expiry and the registration window).
    TemporaryAccessPass,
    /// Signed in with the directory password by a user who had no registered method yet: may
    /// register a first method.
    Password,
    /// The directory password was right, but the user has registered methods and must present
    /// one of them before anything else.
    PasswordPendingSecondFactor,
    /// The directory password and a registered method (passkey or authenticator app).
    PasswordAndSecondFactor,
    /// A registered passkey on its own (user verification makes it multi-factor).
    Passkey,
}

impl WebAuthMethod {
    /// Every variant, for parsing.
    pub const ALL: [WebAuthMethod; 5] = [
        WebAuthMethod::TemporaryAccessPass,
        WebAuthMethod::Password,
        WebAuthMethod::PasswordPendingSecondFactor,
        WebAuthMethod::PasswordAndSecondFactor,
        WebAuthMethod::Passkey,
    ];

    /// The stable string used in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            WebAuthMethod::TemporaryAccessPass => "temporaryAccessPass",
            WebAuthMethod::Password => "password",
            WebAuthMethod::PasswordPendingSecondFactor => "passwordPendingSecondFactor",
            WebAuthMethod::PasswordAndSecondFactor => "passwordAndSecondFactor",
            WebAuthMethod::Passkey => "passkey",
        }
    }

    /// Parses what `as_str` produced.
    pub fn parse(s: &str) -> Option<WebAuthMethod> {
        WebAuthMethod::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// A signed-in browser on the web registration page. The browser holds a random 256-bit id in
/// a cookie; the store keeps only its SHA-256, so a copy of the database can't be replayed as
/// cookies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSession {
    /// Lower-case hex SHA-256 of the session id the browser holds.
    pub id_hash: String,
    /// The signed-in user's stable id.
    pub user_id: String,
    /// When the session began.
    pub created: Timestamp,
    /// The first instant at which the session is no longer valid.
    pub expires: Timestamp,
    /// How the user signed in.
    pub auth_method: WebAuthMethod,
    /// The TAP the session began with, if it did; the session ends when that TAP is gone.
    pub tap_id: Option<String>,
    /// That TAP's expiry: the session never outlives it.
    pub tap_expires: Option<Timestamp>,
    /// Registrations must finish before this instant (10 minutes after a one-time TAP sign-in;
    /// restarted at each new registration with a multi-use TAP); `None`: no window applies.
    pub registration_deadline: Option<Timestamp>,
    /// The user is in a registration-interrupt group and signed in with a TAP: only the
    /// registration wizard is offered.
    pub interrupt_mode: bool,
    /// The token every form and script request of this session must carry.
    pub csrf_token: String,
}

/// What a pending WebAuthn or authenticator-app ceremony is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CeremonyKind {
    /// Registering a passkey or security key.
    PasskeyRegistration,
    /// Presenting a passkey of a known user (second factor after the password).
    PasskeyAuthentication,
    /// Signing in with a discoverable passkey, user not yet known.
    DiscoverableAuthentication,
    /// Adding an authenticator app: the secret shown, waiting for a first valid code.
    TotpEnrolment,
}

impl CeremonyKind {
    /// Every variant, for parsing.
    pub const ALL: [CeremonyKind; 4] = [
        CeremonyKind::PasskeyRegistration,
        CeremonyKind::PasskeyAuthentication,
        CeremonyKind::DiscoverableAuthentication,
        CeremonyKind::TotpEnrolment,
    ];

    /// The stable string used in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            CeremonyKind::PasskeyRegistration => "passkeyRegistration",
            CeremonyKind::PasskeyAuthentication => "passkeyAuthentication",
            CeremonyKind::DiscoverableAuthentication => "discoverableAuthentication",
            CeremonyKind::TotpEnrolment => "totpEnrolment",
        }
    }

    /// Parses what `as_str` produced.
    pub fn parse(s: &str) -> Option<CeremonyKind> {
        CeremonyKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Server-side state of a ceremony in progress (WebAuthn challenge state, a TOTP secret not
/// yet confirmed). Kept in the store, never in the browser, and taken exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebCeremony {
    /// Random id the browser echoes back.
    pub id: String,
    /// What it is.
    pub kind: CeremonyKind,
    /// The session it belongs to (`None` for a sign-in ceremony before any session exists).
    pub session_id_hash: Option<String>,
    /// Opaque serialized state.
    pub state: String,
    /// When it was started.
    pub created: Timestamp,
    /// The first instant at which it can no longer be finished.
    pub expires: Timestamp,
}

/// Where an onboarding message stands in the outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailState {
    /// Waiting for (another) delivery attempt.
    Queued,
    /// Accepted by the SMTP server; the code was erased.
    Sent,
    /// Given up (retry limit, or superseded by a newer pass); the code was erased and the TAP
    /// deleted.
    Failed,
}

impl MailState {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            MailState::Queued => "queued",
            MailState::Sent => "sent",
            MailState::Failed => "failed",
        }
    }

    /// The inverse of [`MailState::as_str`].
    pub fn parse(text: &str) -> Option<MailState> {
        match text {
            "queued" => Some(MailState::Queued),
            "sent" => Some(MailState::Sent),
            "failed" => Some(MailState::Failed),
            _ => None,
        }
    }
}

/// One onboarding message in the outbox: a TAP's code on its way to a mailbox. The code
/// itself is never part of this type's serialised form; the store keeps it sealed until the
/// SMTP server accepts the message and hands it out only to the node that claimed the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxMail {
    /// Random UUID.
    pub id: String,
    /// The TAP the message carries.
    pub tap_id: String,
    /// Its owner's stable id.
    pub user_id: String,
    /// Its owner's sign-in name, for the message and the status listing.
    pub user_principal_name: String,
    /// Its owner's display name, for the message.
    pub display_name: String,
    /// The mailbox the message goes to.
    pub recipient: String,
    /// The TAP's validity window, for the message.
    pub tap_start: Timestamp,
    /// First instant the TAP is no longer usable.
    pub tap_expires: Timestamp,
    /// One-time or multi-use, for the message.
    pub one_time: bool,
    /// What queued it: `bulk` (with the administrator) or `rule NAME`.
    pub origin: String,
    /// When it was queued.
    pub created: Timestamp,
    /// Where it stands.
    pub state: MailState,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// Not before this instant is the next attempt made.
    pub next_attempt: Timestamp,
    /// The last attempt's failure, as the server or the network said it.
    pub last_error: Option<String>,
    /// When it was sent or given up.
    pub finished: Option<Timestamp>,
}

/// How a claimed delivery ended ([`crate::store::Store::finish_mail`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailOutcome {
    /// The server accepted the message: the code is erased.
    Accepted,
    /// It failed and is tried again at `next_attempt`.
    Retry {
        /// When.
        next_attempt: Timestamp,
        /// Why this attempt failed.
        error: String,
    },
    /// It failed for the last time: the code is erased and the TAP deleted.
    Failed {
        /// Why.
        error: String,
    },
}
