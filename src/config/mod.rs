//! Configuration: the one module that reads the config file and the environment.
//!
//! Two layers. `raw` mirrors the TOML file (every key documented and defaulted, unknown
//! keys refused); `load` merges the file with `TAPD__SECTION__KEY` environment overrides
//! through the `config` crate, and `validate` converts the result ONCE into the [`Config`]
//! below, which is what the rest of the daemon uses. The conversion reads the secret files,
//! resolves relative paths against the config file's directory and collects every problem,
//! each named by its key, into one [`ConfigError`]; `tapd check-config` runs exactly this.
//!
//! Depends on `config`, `serde`, `serde_json` (to walk the key tree), `log` (level words)
//! and `zeroize`; nothing else in the crate.

mod load;
pub mod mail_template;
mod raw;
pub mod secrets_key;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use load::{load, load_from_str};
pub use values::{
    format_duration, parse_duration, IpNetwork, LdapTransport, LdapUrl, PublicUrl, Secret, StoreUrl,
};

/// Prefix of environment variables that override config keys (`TAPD__LOG__LEVEL=debug`).
pub const ENV_PREFIX: &str = "TAPD__";

/// Config path used when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tapd/tapd.toml";

/// A configuration that could not be loaded: every problem found, one per entry, each
/// starting with the key it concerns (`radius.clients[1].address: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    /// The problems, in file order as far as possible.
    pub problems: Vec<String>,
}

/// A successfully loaded configuration and the warnings worth logging at startup
/// (anonymous directory bind, unknown `TAPD__` variables, world-readable secrets, …).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Things that are allowed but probably not what the administrator wants.
    pub warnings: Vec<String>,
}

/// The validated configuration. Paths are absolute, secrets are loaded, defaults applied.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from (`None` for `load_from_str`).
    pub source: Option<PathBuf>,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[directory]`.
    pub directory: DirectoryConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[radius]`.
    pub radius: RadiusConfig,
    /// `[web]`.
    pub web: WebConfig,
    /// `[federation]`.
    pub federation: FederationConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[security]`.
    pub security: SecurityConfig,
    /// `[audit]`.
    pub audit: AuditConfig,
    /// `[policy]`.
    pub policy: PolicyConfig,
    /// `[smtp]`; `None`: no mail is sent (and nothing that needs mail can be configured).
    pub smtp: Option<SmtpConfig>,
    /// `[[onboarding.rules]]`.
    pub onboarding_rules: Vec<OnboardingRule>,
}

/// One `[[onboarding.rules]]`, validated.
#[derive(Debug, Clone)]
pub struct OnboardingRule {
    /// Unique name.
    pub name: String,
    /// Group reference; `None`: the rule matches by date alone.
    pub group: Option<String>,
    /// Where the codes go.
    pub recipient: RuleRecipient,
    /// The date attribute the rule matches on, with `days_before`; `None`: by group alone.
    pub date: Option<DateTrigger>,
    /// Lifetime in minutes; `None`: the policy's default.
    pub lifetime_in_minutes: Option<i64>,
    /// Time of day (hour, minute) the TAP starts on its start day; `None`: at once.
    pub start_time: Option<(i8, i8)>,
    /// Days from matching to the start day.
    pub start_after_days: u32,
    /// Zone of `start_time`.
    pub time_zone: jiff::tz::TimeZone,
    /// One-time; `None`: the policy's default.
    pub one_time: Option<bool>,
    /// Serve admin-role holders too.
    pub include_admins: bool,
}

/// Where an onboarding rule (or a bulk row without a recipient) mails a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleRecipient {
    /// The user's manager (the synced user the `manager` attribute names), at their `mail`.
    Manager,
    /// A fixed mailbox.
    Mailbox(String),
}

/// A rule's date trigger: a user matches from `days_before` days before the date in
/// `attribute` until that day (both included, in the rule's zone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateTrigger {
    /// The attribute, lower case (the key of `User::dates`).
    pub attribute: String,
    /// How many days before the date the user is served.
    pub days_before: u32,
}

/// `[smtp]`, validated.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// How to reach the server.
    pub server: SmtpServer,
    /// The sender mailbox as written (checked to parse).
    pub from: String,
    /// `username` and the password read from `password_file`.
    pub credentials: Option<(String, Secret)>,
    /// CA certificate(s) of the server; `None`: the system roots.
    pub ca_file: Option<PathBuf>,
    /// The message, built in or from `template_file`.
    pub template: mail_template::MailTemplate,
    /// Zone the validity window is written in.
    pub time_zone: jiff::tz::TimeZone,
    /// Attempts before a message is given up (≥ 1).
    pub max_attempts: u32,
    /// Wait after the first failure (doubles each time).
    pub retry_initial: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
    /// Longest single delivery.
    pub timeout: Duration,
    /// The web sign-in page the message points to (`web.public_url`).
    pub sign_in_url: String,
}

/// Where the SMTP server is and how the connection is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer {
    /// Host name or address (also the name the certificate must carry).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The transport security.
    pub security: SmtpSecurity,
}

/// Transport security of the SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtps://`: TLS from the first byte.
    Tls,
    /// `smtp://` to a remote host: STARTTLS, and no delivery without it.
    StartTlsRequired,
    /// `smtp://` to a loopback host: STARTTLS when offered, plain otherwise.
    StartTlsOpportunistic,
}

/// `[policy]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyConfig {
    /// What creating a TAP for an administrator does.
    pub privileged_tap: PrivilegedTap,
}

/// `[policy] privileged_tap`: what happens when a TAP is created for a user who holds any
/// admin role (a common account-takeover path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrivilegedTap {
    /// Created like any other.
    Allow,
    /// Created, with a warning journal entry (`TAPD_ALERT=privileged_tap`) and a counted alert.
    #[default]
    Alert,
    /// Refused (403), audited, and alerted as above.
    Deny,
}

impl PrivilegedTap {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PrivilegedTap::Allow => "allow",
            PrivilegedTap::Alert => "alert",
            PrivilegedTap::Deny => "deny",
        }
    }
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Events older than this are pruned; `None`: kept forever.
    pub retention: Option<Duration>,
    /// RADIUS and federation sign-in events are stored within this window (group commit);
    /// zero: each before its answer.
    pub sign_in_flush: Duration,
}

/// `[store]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The backend and its location. The daemon creates a missing SQLite directory.
    pub url: StoreUrl,
    /// SQLite busy timeout.
    pub busy_timeout: Duration,
    /// PostgreSQL password from `password_file`.
    pub password: Option<Secret>,
    /// PostgreSQL server CA certificate(s) (PEM); `None`: the system roots.
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL connections per node.
    pub pool_size: usize,
    /// PostgreSQL `statement_timeout`.
    pub statement_timeout: Duration,
    /// PostgreSQL connection attempt timeout.
    pub connect_timeout: Duration,
    /// The key that seals authenticator-app secrets ([`secrets_key`]).
    pub secrets_key_file: PathBuf,
    /// The previous key during a rotation.
    pub secrets_previous_key_file: Option<PathBuf>,
    /// PostgreSQL: a weak `sslmode` for a non-loopback server was explicitly allowed.
    pub allow_insecure_transport: bool,
}

/// `[directory]`, with the preset applied.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// Where users and groups come from.
    pub source: DirectorySource,
    /// The schema preset the attribute and filter defaults came from.
    pub preset: DirectoryPreset,
    /// Search base (may be empty for an LDIF file).
    pub base_dn: String,
    /// Service account for searches; `None` binds anonymously.
    pub bind: Option<DirectoryBind>,
    /// Extra CA certificates (PEM) for the directory; `None`: system roots.
    pub ca_file: Option<PathBuf>,
    /// Verify certificate and host name (only false when explicitly configured).
    pub tls_verify: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-operation timeout.
    pub operation_timeout: Duration,
    /// Interval between syncs (at least 30 s).
    pub sync_interval: Duration,
    /// Interval between incremental syncs (changes only); `None`: off.
    pub incremental_interval: Option<Duration>,
    /// Search base for users (defaults to `base_dn`).
    pub user_base: String,
    /// Search base for groups (defaults to `base_dn`).
    pub group_base: String,
    /// Filter selecting users.
    pub user_filter: String,
    /// Filter selecting groups.
    pub group_filter: String,
    /// Paged-results page size.
    pub page_size: u32,
    /// Connections kept for password-check binds.
    pub bind_pool_size: u32,
    /// Limits that make a sync refuse mass deletions.
    pub deletion_guard: DeletionGuard,
    /// Attribute names (preset defaults with overrides applied).
    pub attributes: DirectoryAttributes,
}

/// Where the directory data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectorySource {
    /// An LDIF file (demo / offline), re-read on every sync.
    LdifFile(PathBuf),
    /// An LDAP server.
    Ldap {
        /// The server.
        url: LdapUrl,
        /// How the connection is protected.
        transport: LdapTransport,
    },
}

/// The service account the daemon binds as.
#[derive(Debug, Clone)]
pub struct DirectoryBind {
    /// Bind DN.
    pub dn: String,
    /// Password, read from `bind_password_file`.
    pub password: Secret,
}

/// A sync that would delete more users than either limit is refused and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletionGuard {
    /// Absolute limit.
    pub max_deletes: u32,
    /// Percentage of the users currently in the store (0–100).
    pub max_percent: u8,
}

/// Directory schema presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryPreset {
    /// OpenLDAP (`inetOrgPerson`, `groupOfNames`, `entryUUID`).
    OpenLdap,
    /// Microsoft Active Directory (`user`, `group`, `objectGUID`, `sAMAccountName`).
    ActiveDirectory,
    /// 389 Directory Server / Red Hat IdM (`nsUniqueId`).
    Ds389,
}

impl DirectoryPreset {
    /// Parses the config word (`openldap`, `active_directory`, `389ds`).
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "openldap" => Some(Self::OpenLdap),
            "active_directory" => Some(Self::ActiveDirectory),
            "389ds" => Some(Self::Ds389),
            _ => None,
        }
    }

    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenLdap => "openldap",
            Self::ActiveDirectory => "active_directory",
            Self::Ds389 => "389ds",
        }
    }

    /// The preset's attribute names.
    pub fn attributes(self) -> DirectoryAttributes {
        let (id, username, upn) = match self {
            Self::OpenLdap => ("entryUUID", "uid", "mail"),
            Self::ActiveDirectory => ("objectGUID", "sAMAccountName", "userPrincipalName"),
            Self::Ds389 => ("nsUniqueId", "uid", "mail"),
        };
        DirectoryAttributes {
            id: id.into(),
            username: username.into(),
            upn: upn.into(),
            display_name: "displayName".into(),
            mail: "mail".into(),
            member: "member".into(),
            group_id: id.into(),
            group_name: "cn".into(),
            manager: "manager".into(),
            dates: Vec::new(),
        }
    }

    /// The preset's user filter.
    pub fn user_filter(self) -> &'static str {
        match self {
            Self::OpenLdap | Self::Ds389 => "(objectClass=inetOrgPerson)",
            Self::ActiveDirectory => "(&(objectCategory=person)(objectClass=user))",
        }
    }

    /// The preset's group filter.
    pub fn group_filter(self) -> &'static str {
        match self {
            Self::OpenLdap | Self::Ds389 => {
                "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))"
            }
            Self::ActiveDirectory => "(objectClass=group)",
        }
    }
}

/// LDAP attribute names used by the sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryAttributes {
    /// Stable user id.
    pub id: String,
    /// Login name.
    pub username: String,
    /// userPrincipalName.
    pub upn: String,
    /// Display name.
    pub display_name: String,
    /// Mail address.
    pub mail: String,
    /// Membership attribute on groups.
    pub member: String,
    /// Stable group id.
    pub group_id: String,
    /// Group name.
    pub group_name: String,
    /// The user's manager, a DN (`manager` in Active Directory and inetOrgPerson).
    pub manager: String,
    /// Date attributes read from user entries: the `date_attribute` of every onboarding rule,
    /// de-duplicated case-insensitively (filled in from `[[onboarding.rules]]`).
    pub dates: Vec<String>,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Absolute path of the admin API socket.
    pub socket: PathBuf,
    /// Group the socket is chowned to (mode 0660); `None`: mode 0600. Resolved by the daemon.
    pub socket_group: Option<String>,
    /// Local uid 0 is a break-glass global administrator.
    pub root_is_global_administrator: bool,
    /// Directory groups granting each admin role.
    pub roles: RoleMapping,
    /// Longest an admin connection may stay open.
    pub connection_timeout: Duration,
}

/// Admin role → directory group references (id, normalised DN, or a cn only one group has; see `crate::group_ref`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleMapping {
    /// Groups granting `global_administrator`.
    pub global_administrator: Vec<String>,
    /// Groups granting `privileged_authentication_administrator`.
    pub privileged_authentication_administrator: Vec<String>,
    /// Groups granting `authentication_administrator`.
    pub authentication_administrator: Vec<String>,
    /// Groups granting `authentication_policy_administrator`.
    pub authentication_policy_administrator: Vec<String>,
    /// Groups granting `global_reader`.
    pub global_reader: Vec<String>,
}

impl RoleMapping {
    /// Every (role key, groups) pair, in a fixed order.
    pub fn entries(&self) -> [(&'static str, &[String]); 5] {
        [
            ("global_administrator", &self.global_administrator),
            (
                "privileged_authentication_administrator",
                &self.privileged_authentication_administrator,
            ),
            (
                "authentication_administrator",
                &self.authentication_administrator,
            ),
            (
                "authentication_policy_administrator",
                &self.authentication_policy_administrator,
            ),
            ("global_reader", &self.global_reader),
        ]
    }

    /// Whether no role is mapped to any group.
    pub fn is_empty(&self) -> bool {
        self.entries().iter().all(|(_, groups)| groups.is_empty())
    }
}

/// `[radius]`.
#[derive(Debug, Clone)]
pub struct RadiusConfig {
    /// UDP addresses to serve on; empty: RADIUS off.
    pub listen: Vec<SocketAddr>,
    /// Behaviour while the directory is unreachable.
    pub directory_unavailable: DirectoryUnavailable,
    /// Known clients (unique names, distinct networks).
    pub clients: Vec<RadiusClient>,
    /// Attributes an Access-Accept carries for members of a group, in file order.
    pub reply_attributes: Vec<ReplyAttributeRule>,
    /// Every Access-Reject is sent no earlier than this long after its request arrived
    /// (zero: at once; at most 10 s).
    pub reject_delay: Duration,
    /// How long an Access-Challenge's State stays valid (`challenge_lifetime`; 1 s to 120 s,
    /// default 120 s).
    pub challenge_lifetime: Duration,
}

/// One `[[radius.reply_attributes]]` entry: at least one of `class` and `filter_id`, each 1
/// to 253 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyAttributeRule {
    /// The group (id, normalised DN, or unique cn) whose members (nested membership counts) get the attributes.
    pub group: String,
    /// Class value.
    pub class: Option<String>,
    /// Filter-Id value.
    pub filter_id: Option<String>,
}

impl RadiusConfig {
    /// Whether RADIUS is served at all.
    pub fn is_enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// The client a packet from `source` belongs to: the most specific matching network.
    /// `None`: unknown client, drop silently.
    pub fn client_for(&self, source: IpAddr) -> Option<&RadiusClient> {
        self.clients
            .iter()
            .filter(|client| client.address.contains(source))
            .max_by_key(|client| client.address.prefix_len())
    }
}

/// What a RADIUS request gets while the directory is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryUnavailable {
    /// No reply: the NAS retries or fails over to another server.
    Drop,
    /// Access-Reject.
    Reject,
}

/// One RADIUS client.
#[derive(Debug, Clone)]
pub struct RadiusClient {
    /// Unique name for logs, audit and metrics.
    pub name: String,
    /// Source network.
    pub address: IpNetwork,
    /// Shared secret.
    pub secret: Secret,
    /// Drop requests lacking a valid Message-Authenticator.
    pub require_message_authenticator: bool,
    /// `second_factor = "totp"`: after the directory password, an authenticator-app code;
    /// `None`: `second_factor = "none"`, the password alone.
    pub second_factor: Option<TotpRequirement>,
}

/// How a RADIUS client asks for the authenticator-app code (`second_factor = "totp"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpRequirement {
    /// What a user without a registered authenticator app gets (`without_second_factor`).
    pub without_app: WithoutSecondFactor,
    /// Challenge (RFC 2865 §4.4) or the code appended to the password
    /// (`second_factor_mode`).
    pub mode: SecondFactorMode,
}

/// `without_second_factor`: a correct password from a user who has no authenticator app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutSecondFactor {
    /// Access-Reject (`second_factor_missing`), telling the user to register at the web page.
    Reject,
    /// Access-Accept on the password alone.
    Accept,
}

/// `second_factor_mode`: how the code reaches tapd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondFactorMode {
    /// Access-Challenge with State; the code comes in the follow-up request's User-Password.
    Challenge,
    /// The user types password, separator, code in one User-Password; split at the LAST
    /// separator (`second_factor_separator`).
    Append {
        /// One to four characters, no digit, no whitespace.
        separator: String,
    },
}

/// `[web]`.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Where the site listens; `None`: off.
    pub listen: Option<SocketAddr>,
    /// The public origin (required when `listen` is set).
    pub public_url: Option<PublicUrl>,
    /// Certificate and key for HTTPS; `None`: plain HTTP (loopback or behind a proxy only).
    pub tls: Option<TlsFiles>,
    /// A TLS-terminating proxy is in front.
    pub behind_tls_proxy: bool,
    /// Peers whose `X-Forwarded-For` is believed (empty: nobody's).
    pub trusted_proxies: Vec<IpNetwork>,
    /// Deadlines and caps of every TCP listener (web, federation, metrics).
    pub limits: HttpLimits,
    /// Groups whose members get registration interrupt mode.
    pub registration_interrupt_groups: Vec<String>,
}

/// Deadlines and caps of a TCP (HTTP/1.1) listener, from `[web]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest wait for a request's headers, and for the next request on an idle
    /// keep-alive connection.
    pub header_timeout: Duration,
    /// Longest time to receive a request's body.
    pub body_timeout: Duration,
    /// Longest time from a request's headers to its response.
    pub request_timeout: Duration,
    /// Connections one source address may hold at once.
    pub max_connections_per_address: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections_per_address: 32,
        }
    }
}

/// PEM files for a TLS listener (read by the listener, so they can be rotated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert_file: PathBuf,
    /// Private key.
    pub key_file: PathBuf,
}

/// `[federation]`.
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// Own listener; `None`: served on the web listener.
    pub listen: Option<SocketAddr>,
    /// Callers allowed to use the endpoint.
    pub relying_parties: Vec<RelyingParty>,
    /// Every rejection (401, 403) is answered no earlier than this long after the request
    /// arrived (zero: at once; at most 10 s).
    pub reject_delay: Duration,
}

/// A caller of the federation endpoint.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    /// Unique name.
    pub name: String,
    /// Bearer token it presents.
    pub token: Secret,
}

/// `[log]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Maximum level logged.
    pub level: log::LevelFilter,
    /// Destination.
    pub format: LogFormat,
}

/// Log destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// The journal when stderr is connected to it (`JOURNAL_STREAM`), else stderr.
    Auto,
    /// The systemd journal, with structured fields.
    Journal,
    /// Plain lines on stderr.
    Stderr,
}

/// `[metrics]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where Prometheus metrics are served; `None`: off.
    pub listen: Option<SocketAddr>,
}

/// `[security]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecurityConfig {
    /// Argon2 hashes computed at once (≥ 1).
    pub argon2_max_concurrent: usize,
    /// Failed RADIUS / federation sign-ins of one user within `sign_in_failure_window`
    /// after which the user is throttled (≥ 1).
    pub sign_in_max_failures: u32,
    /// Window in which failures are counted (> 0).
    pub sign_in_failure_window: Duration,
    /// How long a throttled user is rejected without a directory check (> 0).
    pub sign_in_cooldown: Duration,
}
