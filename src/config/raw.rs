//! The configuration file as written: serde structs that mirror `tapd.toml` key for key.
//!
//! Every field has a default (so a missing key never aborts parsing) and every struct
//! denies unknown keys. Values that need checking (addresses, durations, URLs, enum-like
//! words) stay strings here so that the conversion in `validate` can report every bad value
//! at once, each named by its key. Nothing outside `crate::config` sees these types.

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// `[store]`: where users, TAPs, methods and audit live.
    pub store: RawStore,
    /// `[directory]`: the LDAP directory (or LDIF file) users and groups are synced from.
    pub directory: RawDirectory,
    /// `[admin]`: the local admin API socket and the role mapping.
    pub admin: RawAdmin,
    /// `[radius]`: the RADIUS PAP listener and its clients.
    pub radius: RawRadius,
    /// `[web]`: the web registration site.
    pub web: RawWeb,
    /// `[federation]`: the federation (AD FS-adapter-style) endpoint.
    pub federation: RawFederation,
    /// `[log]`: log level and destination.
    pub log: RawLog,
    /// `[metrics]`: the Prometheus metrics listener.
    pub metrics: RawMetrics,
    /// `[security]`: resource bounds for the expensive parts of sign-in.
    pub security: RawSecurity,
    /// `[audit]`: how long audit events are kept.
    pub audit: RawAudit,
    /// `[policy]`: rules on what administrators may do beyond the role matrix.
    pub policy: RawPolicy,
    /// `[smtp]`: the mail server onboarding messages are sent through; off while `url` is
    /// empty.
    pub smtp: RawSmtp,
    /// `[onboarding]`: rules that issue and mail a TAP when a synced user first matches.
    pub onboarding: RawOnboarding,
}

/// `[onboarding]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawOnboarding {
    /// `[[onboarding.rules]]`.
    pub rules: Vec<RawOnboardingRule>,
}

/// `[[onboarding.rules]]`: a user who joins `group` (after the rule was first evaluated), or
/// whose `date_attribute` is at most `days_before` days ahead, gets one TAP, mailed to
/// `recipient` (by default their manager).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawOnboardingRule {
    /// Unique name; the store remembers per name which users the rule served.
    pub name: String,
    /// The group whose new members the rule serves (id, DN or unique cn). With
    /// `date_attribute` too, a user must be a member and in the date window.
    pub group: Option<String>,
    /// Where each code goes: `manager` (the default), the user's manager's mail address (the
    /// synced user the entry's `manager` DN names), or a fixed mailbox address.
    pub recipient: Option<String>,
    /// A user attribute holding a date (GeneralizedTime `YYYYMMDDHHMMSSZ` or `YYYY-MM-DD`,
    /// e.g. `employeeHireDate`): the rule serves a user from `days_before` days before that
    /// date until the date itself. Default: none (the rule matches by `group` alone).
    pub date_attribute: Option<String>,
    /// With `date_attribute`: how many days before the date the user gets the pass. Default 0.
    pub days_before: u32,
    /// The TAP's lifetime. Default: the policy's default lifetime.
    pub lifetime: Option<String>,
    /// `HH:MM`: the TAP starts at this time of day (in `time_zone`) on the start day, or at
    /// once when that moment has passed. Default: at once.
    pub start_time: Option<String>,
    /// The start day: this many days after the day the user first matched. Default 0.
    pub start_after_days: u32,
    /// Zone of `start_time`. Default: `[smtp] time_zone`.
    pub time_zone: Option<String>,
    /// One-time TAP. Default: the policy's default.
    pub one_time: Option<bool>,
    /// Also serve users who hold an admin role (each such issuance is audited as such).
    /// Default false: they are skipped, and the skip is audited.
    pub include_admins: bool,
}

/// `[smtp]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSmtp {
    /// `smtps://host[:465]` (TLS from the first byte) or `smtp://host[:587]` (STARTTLS, which
    /// is required unless the host is loopback). Default: empty, no mail is sent.
    pub url: String,
    /// The sender, `Name <address>` or `address`. Required with `url`.
    pub from: String,
    /// The account to authenticate as (with `password_file`). Default: none, no AUTH.
    pub username: Option<String>,
    /// A file (mode 0600) holding the password of `username`.
    pub password_file: Option<String>,
    /// PEM file with the CA certificate(s) that sign the server's certificate. Default: the
    /// system roots.
    pub ca_file: Option<String>,
    /// A file that replaces the built-in message (subject, plain text and HTML parts), e.g.
    /// to translate it. Default: the built-in English message.
    pub template_file: Option<String>,
    /// The time zone the validity window is written in (an IANA name). Default `UTC`.
    pub time_zone: String,
    /// Delivery attempts of one message before it is given up (and its TAP deleted).
    /// Default 8.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one.
    /// Default `30s`.
    pub retry_initial: String,
    /// The longest wait between two attempts. Default `1h`.
    pub retry_max: String,
    /// The longest one delivery (connect, TLS, dialogue) may take. Default `30s`.
    pub timeout: String,
}

impl Default for RawSmtp {
    fn default() -> Self {
        Self {
            url: String::new(),
            from: String::new(),
            username: None,
            password_file: None,
            ca_file: None,
            template_file: None,
            time_zone: "UTC".into(),
            max_attempts: 8,
            retry_initial: "30s".into(),
            retry_max: "1h".into(),
            timeout: "30s".into(),
        }
    }
}

/// `[policy]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPolicy {
    /// A TAP created for a user holding any admin role: `allow` (nothing special), `alert`
    /// (a warning journal entry `TAPD_ALERT=privileged_tap` and the
    /// `tapd_alerts_total{kind="privileged_tap"}` counter) or `deny` (refused with 403).
    /// Default `alert`.
    pub privileged_tap: String,
}

impl Default for RawPolicy {
    fn default() -> Self {
        Self {
            privileged_tap: "alert".into(),
        }
    }
}

/// `[audit]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAudit {
    /// Events older than this are deleted (in small batches, hourly). `"0"` or `"off"` keeps
    /// them forever. Default `400d`: a year of compliance plus margin.
    pub retention: String,
    /// How long a RADIUS or federation sign-in event may wait to be stored (group commit);
    /// `"0"` stores each before the answer. Default `100ms`, at most `10s`.
    pub sign_in_flush: String,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            retention: "400d".into(),
            sign_in_flush: "100ms".into(),
        }
    }
}

/// `[store]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawStore {
    /// `sqlite:///abs/path.db`, `sqlite:relative/path.db` (relative to the config file's
    /// directory) or `postgres://user@host/db`. Default `sqlite:///var/lib/tapd/tapd.db`.
    pub url: String,
    /// How long SQLite waits for a lock held by another connection. Default `5s`.
    pub busy_timeout: String,
    /// PostgreSQL: a file holding the password (the URL then carries none). Default: none.
    pub password_file: Option<String>,
    /// PostgreSQL: PEM file with the CA certificate(s) of the server, for `sslmode=verify-ca`
    /// / `verify-full` (and `require`, which then verifies too). Default: the system roots.
    pub ca_file: Option<String>,
    /// PostgreSQL: connections this node keeps at most. Default 16.
    pub pool_size: u32,
    /// PostgreSQL: the longest one statement may run or wait for a lock. Default `10s`.
    pub statement_timeout: String,
    /// PostgreSQL: the longest one connection attempt may take. Default `5s`.
    pub connect_timeout: String,
    /// The key (32 random bytes, mode 0600) that seals authenticator-app secrets in the store;
    /// created at first start when missing. Default: `secrets.key` next to a SQLite database,
    /// `/var/lib/tapd/secrets.key` for PostgreSQL (every node needs the same one).
    pub secrets_key_file: Option<String>,
    /// During a key rotation only: the previous key, used to open rows sealed under it; they
    /// are sealed again under `secrets_key_file` at start. Default: none.
    pub secrets_previous_key_file: Option<String>,
    /// PostgreSQL: allow `sslmode` weaker than `verify-full` (or `require` without a CA) for a
    /// server that is not on loopback. Default `false`.
    pub allow_insecure_transport: bool,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url: "sqlite:///var/lib/tapd/tapd.db".into(),
            busy_timeout: "5s".into(),
            password_file: None,
            ca_file: None,
            pool_size: 16,
            statement_timeout: "10s".into(),
            connect_timeout: "5s".into(),
            secrets_key_file: None,
            secrets_previous_key_file: None,
            allow_insecure_transport: false,
        }
    }
}

/// `[directory]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawDirectory {
    /// `ldaps://host[:port]`, `ldap://host[:port]` (with `starttls = true` unless the host is
    /// loopback) or `file:PATH.ldif` (demo / offline). No default: required.
    pub url: String,
    /// Attribute and filter defaults: `openldap`, `active_directory` or `389ds`.
    /// Default `openldap`.
    pub preset: String,
    /// Search base for users and groups. Required for LDAP; optional for LDIF files.
    pub base_dn: String,
    /// DN the daemon binds as for searches. Absent: anonymous bind (warned about).
    pub bind_dn: Option<String>,
    /// File holding the bind password (required with `bind_dn`). Read at load time.
    pub bind_password_file: Option<String>,
    /// Upgrade an `ldap://` connection with StartTLS. Default false.
    pub starttls: bool,
    /// PEM file with the CA certificates trusted for the directory. Default: system roots.
    pub ca_file: Option<String>,
    /// Verify the directory's certificate and host name. Default true; never turn it off
    /// outside a lab.
    pub tls_verify: bool,
    /// Timeout for establishing a connection. Default `5s`.
    pub connect_timeout: String,
    /// Timeout for each LDAP operation (bind, search page). Default `10s`.
    pub operation_timeout: String,
    /// How often the directory is synced. Default `5m`; at least `30s`.
    pub sync_interval: String,
    /// How often only the changes are read between full syncs (LDAP: RFC 4533 content sync
    /// where offered, else `modifyTimestamp` or `uSNChanged`). Default `1m`; `0s` turns
    /// incremental syncs off. At least `5s`.
    pub incremental_interval: String,
    /// Search base for users; default `base_dn`.
    pub user_base: Option<String>,
    /// Search base for groups; default `base_dn`.
    pub group_base: Option<String>,
    /// LDAP filter selecting users; default from the preset.
    pub user_filter: Option<String>,
    /// LDAP filter selecting groups; default from the preset.
    pub group_filter: Option<String>,
    /// Paged-results page size (Active Directory caps it at 1000). Default 500.
    pub page_size: u32,
    /// Connections kept for password-check binds. Default 4.
    pub bind_pool_size: u32,
    /// A sync that would delete more than this many users is refused. Default 500.
    pub deletion_guard_max_deletes: u32,
    /// A sync that would delete more than this percentage of users is refused. Default 20.
    pub deletion_guard_max_percent: u32,
    /// `[directory.attributes]`: per-attribute overrides of the preset.
    pub attributes: RawAttributes,
}

impl Default for RawDirectory {
    fn default() -> Self {
        Self {
            url: String::new(),
            preset: "openldap".into(),
            base_dn: String::new(),
            bind_dn: None,
            bind_password_file: None,
            starttls: false,
            ca_file: None,
            tls_verify: true,
            connect_timeout: "5s".into(),
            operation_timeout: "10s".into(),
            sync_interval: "5m".into(),
            incremental_interval: "1m".into(),
            user_base: None,
            group_base: None,
            user_filter: None,
            group_filter: None,
            page_size: 500,
            bind_pool_size: 4,
            deletion_guard_max_deletes: 500,
            deletion_guard_max_percent: 20,
            attributes: RawAttributes::default(),
        }
    }
}

/// `[directory.attributes]`: LDAP attribute names overriding the preset. All optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAttributes {
    /// Stable user id (`entryUUID`, `objectGUID`, `nsUniqueId`).
    pub id: Option<String>,
    /// Login name (`uid`, `sAMAccountName`).
    pub username: Option<String>,
    /// userPrincipalName (`userPrincipalName`; `mail` on OpenLDAP and 389-DS).
    pub upn: Option<String>,
    /// Display name (`displayName`).
    pub display_name: Option<String>,
    /// Mail address (`mail`).
    pub mail: Option<String>,
    /// Group membership attribute on groups (`member`).
    pub member: Option<String>,
    /// Stable group id (same attribute as `id` by default).
    pub group_id: Option<String>,
    /// Group name (`cn`).
    pub group_name: Option<String>,
}

/// `[admin]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdmin {
    /// Unix socket of the admin API. Default `/run/tapd/admin.sock`.
    pub socket: String,
    /// Group the socket is given to (mode 0660); absent: mode 0600, owner only.
    pub socket_group: Option<String>,
    /// Local uid 0 is a break-glass global administrator. Default true.
    pub root_is_global_administrator: bool,
    /// `[admin.roles]`: role → directory groups (id, normalised DN, or unique cn).
    pub roles: RawRoles,
    /// Longest an admin connection may stay open, whatever it does; its request headers
    /// must also arrive within 10 s (or this, if shorter). Default `120s`.
    pub connection_timeout: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            socket: "/run/tapd/admin.sock".into(),
            socket_group: None,
            root_is_global_administrator: true,
            roles: RawRoles::default(),
            connection_timeout: "120s".into(),
        }
    }
}

/// `[admin.roles]`: for each admin role, the directory groups whose members hold it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRoles {
    /// Everything, including the policy; not their own TAP.
    pub global_administrator: Vec<String>,
    /// TAPs of admins and members.
    pub privileged_authentication_administrator: Vec<String>,
    /// TAPs of members (users without an admin role).
    pub authentication_administrator: Vec<String>,
    /// Read and edit the TAP policy.
    pub authentication_policy_administrator: Vec<String>,
    /// Read everything, write nothing.
    pub global_reader: Vec<String>,
}

/// `[radius]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRadius {
    /// UDP addresses to serve RADIUS on. Default empty: RADIUS off.
    pub listen: Vec<String>,
    /// What a request gets while the directory can't be reached: `drop` (the NAS retries or
    /// fails over) or `reject`. Default `drop`.
    pub directory_unavailable: String,
    /// `[[radius.clients]]`.
    pub clients: Vec<RawRadiusClient>,
    /// `[[radius.reply_attributes]]`: attributes added to an Access-Accept for members of a
    /// group.
    pub reply_attributes: Vec<RawReplyAttribute>,
    /// Every Access-Reject is sent no earlier than this long after the request arrived
    /// (FreeRADIUS `reject_delay`), so unknown, disabled and known users answer alike.
    /// `0` answers at once. Default `1s`.
    pub reject_delay: String,
    /// How long the State of an Access-Challenge (`second_factor = "totp"`) stays valid;
    /// 1 s to 120 s. Default `120s`; shorter values exist for tests and impatient NASes.
    pub challenge_lifetime: String,
}

impl Default for RawRadius {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            directory_unavailable: "drop".into(),
            clients: Vec::new(),
            reply_attributes: Vec::new(),
            reject_delay: "1s".into(),
            challenge_lifetime: "120s".into(),
        }
    }
}

/// One `[[radius.reply_attributes]]` entry: what an Access-Accept carries for members of
/// `group` (directly or through nested groups).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawReplyAttribute {
    /// The group (id, normalised DN, or unique cn) whose members get these attributes. Required.
    pub group: String,
    /// Class (RFC 2865 §5.25), 1 to 253 bytes, echoed by the NAS in accounting.
    pub class: Option<String>,
    /// Filter-Id (RFC 2865 §5.11), 1 to 253 bytes, naming a filter list on the NAS.
    pub filter_id: Option<String>,
}

/// One `[[radius.clients]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRadiusClient {
    /// Name used in logs, audit and metrics; unique.
    pub name: String,
    /// Source IP address or CIDR network the client sends from.
    pub address: String,
    /// File holding the shared secret. Read at load time.
    pub secret_file: String,
    /// Drop Access-Requests without a valid Message-Authenticator (BlastRADIUS). Default true.
    pub require_message_authenticator: bool,
    /// `none` (the directory password alone) or `totp` (then an authenticator-app code).
    /// Default `none`.
    pub second_factor: String,
    /// With `totp`: what a user without an authenticator app gets, `reject` or `accept`.
    /// Default `reject`.
    pub without_second_factor: String,
    /// With `totp`: `challenge` (Access-Challenge, RFC 2865 §4.4) or `append` (password,
    /// separator, code in one User-Password). Default `challenge`.
    pub second_factor_mode: String,
    /// With `append`: what separates the password from the code; tapd splits at the last
    /// one. One to four characters, no digit, no whitespace. Default `,`.
    pub second_factor_separator: String,
}

impl Default for RawRadiusClient {
    fn default() -> Self {
        Self {
            name: String::new(),
            address: String::new(),
            secret_file: String::new(),
            require_message_authenticator: true,
            second_factor: "none".into(),
            without_second_factor: "reject".into(),
            second_factor_mode: "challenge".into(),
            second_factor_separator: ",".into(),
        }
    }
}

/// `[web]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawWeb {
    /// TCP address of the web registration site; absent: web off.
    pub listen: Option<String>,
    /// The URL users type (an origin: `https://host[:port]`); also quoted in RADIUS and
    /// federation rejections. Required when `listen` is set.
    pub public_url: Option<String>,
    /// PEM certificate chain for HTTPS.
    pub tls_cert_file: Option<String>,
    /// PEM private key for HTTPS.
    pub tls_key_file: Option<String>,
    /// A TLS-terminating reverse proxy sits in front; serve plain HTTP. Default false.
    pub behind_tls_proxy: bool,
    /// Groups standing for registration campaigns (SSPR / Identity Protection); their
    /// members land in interrupt mode after a TAP sign-in.
    pub registration_interrupt_groups: Vec<String>,
    /// Reverse proxies (addresses or CIDRs) whose `X-Forwarded-For` is believed. Default
    /// empty: the socket peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Longest a client may take to send a request's headers; also how long an idle
    /// keep-alive connection stays open. Every TCP listener (web, federation, metrics).
    /// Default `10s`.
    pub header_timeout: String,
    /// Longest a client may take to send a request's body. Default `10s`.
    pub body_timeout: String,
    /// Longest a whole request may take, from its headers to the response. Default `30s`.
    pub request_timeout: String,
    /// Connections one source address may hold open at once on each TCP listener.
    /// Default 32.
    pub max_connections_per_address: u32,
}

impl Default for RawWeb {
    fn default() -> Self {
        Self {
            listen: None,
            public_url: None,
            tls_cert_file: None,
            tls_key_file: None,
            behind_tls_proxy: false,
            registration_interrupt_groups: Vec::new(),
            trusted_proxies: Vec::new(),
            header_timeout: "10s".into(),
            body_timeout: "10s".into(),
            request_timeout: "30s".into(),
            max_connections_per_address: 32,
        }
    }
}

/// `[federation]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawFederation {
    /// Own TCP address for the endpoint; absent: served on the web listener.
    pub listen: Option<String>,
    /// `[[federation.relying_parties]]`.
    pub relying_parties: Vec<RawRelyingParty>,
    /// Every rejection (401, 403) is answered no earlier than this long after the request
    /// arrived. `0` answers at once. Default `1s`.
    pub reject_delay: String,
}

impl Default for RawFederation {
    fn default() -> Self {
        Self {
            listen: None,
            relying_parties: Vec::new(),
            reject_delay: "1s".into(),
        }
    }
}

/// One `[[federation.relying_parties]]` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRelyingParty {
    /// Name used in logs and audit; unique.
    pub name: String,
    /// File holding the bearer token (at least 16 characters). Read at load time.
    pub token_file: String,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    /// `error`, `warn`, `info`, `debug` or `trace`. Default `info`.
    pub level: String,
    /// `auto` (journal when started by systemd, else stderr), `journal` or `stderr`.
    /// Default `auto`.
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "auto".into(),
        }
    }
}

/// `[metrics]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMetrics {
    /// Serve Prometheus metrics. Default true.
    pub enabled: bool,
    /// TCP address of the metrics endpoint. Default `127.0.0.1:9812`.
    pub listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9812".into(),
        }
    }
}

/// `[security]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSecurity {
    /// Argon2 hashes computed at once (each takes ~19 MiB); default: the number of CPUs.
    pub argon2_max_concurrent: Option<u32>,
    /// Failed RADIUS / federation sign-ins of one user from one source (Calling-Station-Id,
    /// else the NAS, else the client address), within `sign_in_failure_window`, after which
    /// further attempts of that user from that source are rejected without asking the directory for
    /// `sign_in_cooldown`. Keep it below the directory's lockout threshold. Default 5.
    pub sign_in_max_failures: u32,
    /// The window in which failures are counted. Default `5m`.
    pub sign_in_failure_window: String,
    /// How long a throttled user is rejected without a directory check. Default `60s`.
    pub sign_in_cooldown: String,
}

impl Default for RawSecurity {
    fn default() -> Self {
        Self {
            argon2_max_concurrent: None,
            sign_in_max_failures: 5,
            sign_in_failure_window: "5m".into(),
            sign_in_cooldown: "60s".into(),
        }
    }
}

impl RawConfig {
    /// A default config with one element in every array of tables, so that walking its
    /// serialized form yields every key the file may contain (see `schema`).
    pub fn schema_example() -> Self {
        let mut example = Self::default();
        example.radius.clients.push(RawRadiusClient::default());
        example
            .radius
            .reply_attributes
            .push(RawReplyAttribute::default());
        example
            .federation
            .relying_parties
            .push(RawRelyingParty::default());
        example.onboarding.rules.push(RawOnboardingRule::default());
        example
    }
}
