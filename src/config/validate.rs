//! The one conversion from the raw file structs into the validated `Config`.
//!
//! It never stops at the first problem: each section is checked in full, bad values are
//! replaced by placeholders so checking can go on, and every problem is recorded as
//! `key: message`. Secret files are read here (and only here). Warnings are for settings
//! that work but are probably a mistake.
//!
//! Over 800 lines on purpose: the checks of every section are one pass over one `RawConfig`
//! that collects every problem, and the cross-section rules (listeners vs TLS, proxies,
//! store transport) need the sections side by side.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{
    RawAdmin, RawAudit, RawConfig, RawDirectory, RawFederation, RawLog, RawMetrics, RawPolicy,
    RawRadius, RawRadiusClient, RawReplyAttribute, RawSecurity, RawStore, RawWeb,
};
use super::values::{
    is_loopback_host, parse_duration, read_secret_file, resolve_path, unsafe_secret_file,
    IpNetwork, LdapTransport, LdapUrl, PublicUrl, Secret, StoreUrl,
};
use super::{
    AdminConfig, AuditConfig, Config, ConfigError, DeletionGuard, DirectoryBind, DirectoryConfig,
    DirectoryPreset, DirectorySource, DirectoryUnavailable, FederationConfig, HttpLimits, Loaded,
    LogConfig, LogFormat, MetricsConfig, PolicyConfig, PrivilegedTap, RadiusClient, RadiusConfig,
    RelyingParty, ReplyAttributeRule, RoleMapping, SecondFactorMode, SecurityConfig, StoreConfig,
    TlsFiles, TotpRequirement, WebConfig, WithoutSecondFactor,
};

#[path = "smtp.rs"]
mod smtp;

/// Shortest accepted sync interval: more often would hammer the directory.
const MIN_SYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Shortest accepted incremental sync interval.
const MIN_INCREMENTAL_INTERVAL: Duration = Duration::from_secs(5);
/// Minimum federation token length.
const MIN_TOKEN_LEN: usize = 16;
/// RFC 2865 §3: the shared secret should be at least 16 octets; shorter ones are refused.
const MINIMUM_SECRET_LEN: usize = 16;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_LEN: usize = 107;

/// Problems and warnings found so far, plus the base directory for relative paths.
struct Report<'a> {
    base_dir: &'a Path,
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl Report<'_> {
    fn problem(&mut self, key: &str, message: impl Display) {
        self.problems.push(format!("{key}: {message}"));
    }

    fn warn(&mut self, key: &str, message: impl Display) {
        self.warnings.push(format!("{key}: {message}"));
    }

    fn duration(&mut self, key: &str, text: &str) -> Duration {
        parse_duration(text).unwrap_or_else(|err| {
            self.problem(key, err);
            Duration::ZERO
        })
    }

    fn positive_duration(&mut self, key: &str, text: &str) -> Duration {
        let duration = self.duration(key, text);
        if duration.is_zero() && parse_duration(text).is_ok() {
            self.problem(key, "must be longer than zero");
        }
        duration
    }

    fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    key,
                    format!("{text:?} is not an IP address and port (e.g. \"127.0.0.1:8080\", \"[::1]:8080\")"),
                );
                None
            }
        }
    }

    /// An optional listen address; `""` means off (so an environment variable can turn a
    /// listener off).
    fn optional_listen(&mut self, key: &str, text: Option<&str>) -> Option<SocketAddr> {
        match text {
            None | Some("") => None,
            Some(text) => self.socket_addr(key, text),
        }
    }

    /// A path from the file, resolved against the config directory; must end up absolute.
    fn path(&mut self, key: &str, text: &str) -> PathBuf {
        let path = resolve_path(self.base_dir, text);
        if !path.is_absolute() {
            self.problem(
                key,
                format!(
                    "{} is not an absolute path (relative paths are resolved against the config file's directory)",
                    path.display()
                ),
            );
        }
        path
    }

    /// A file another part of the daemon reads later (LDIF, CA, TLS): checked now, but only
    /// warned about, since it may be deployed after the config.
    fn later_file(&mut self, key: &str, text: &str) -> PathBuf {
        let path = self.path(key, text);
        if let Err(err) = std::fs::File::open(&path) {
            self.warn(key, format!("{} cannot be read now: {err}", path.display()));
        }
        path
    }

    /// A secret file, read now.
    fn secret(&mut self, key: &str, text: &str) -> Option<Secret> {
        if text.is_empty() {
            self.problem(key, "required");
            return None;
        }
        let path = self.path(key, text);
        if let Some(unsafe_because) = unsafe_secret_file(&path) {
            self.problem(key, unsafe_because);
            return None;
        }
        match read_secret_file(&path) {
            Ok(secret) => Some(secret),
            Err(err) => {
                self.problem(key, err);
                None
            }
        }
    }

    /// A secret file another part of the daemon reads later (the web's TLS key): checked now
    /// like [`Report::later_file`], and refused when others could read or replace it.
    fn later_secret_file(&mut self, key: &str, text: &str) -> PathBuf {
        let path = self.later_file(key, text);
        if let Some(unsafe_because) = unsafe_secret_file(&path) {
            self.problem(key, unsafe_because);
        }
        path
    }

    fn non_empty(&mut self, key: &str, text: &str) {
        if text.trim().is_empty() {
            self.problem(key, "must not be empty");
        }
    }
}

/// Converts the raw file into the validated config, reading secrets and resolving paths.
pub(super) fn validate(
    raw: RawConfig,
    base_dir: &Path,
    source: Option<PathBuf>,
) -> Result<Loaded, ConfigError> {
    let mut report = Report {
        base_dir,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let store = store(&mut report, &raw.store);
    let directory = directory(&mut report, &raw.directory);
    let admin = admin(&mut report, &raw.admin);
    let web = web(&mut report, &raw.web);
    let radius = radius(&mut report, &raw.radius, &web);
    let federation = federation(&mut report, &raw.federation, &web);
    let log = log(&mut report, &raw.log);
    let metrics = metrics(&mut report, &raw.metrics);
    let security = security(&mut report, &raw.security);
    let audit = audit(&mut report, &raw.audit);
    let policy = policy(&mut report, &raw.policy);
    check_tcp_listeners(&mut report, &web, &federation, &metrics);
    let smtp = smtp::smtp(&mut report, &raw.smtp, &web);
    let onboarding_rules = smtp::onboarding_rules(&mut report, &raw.onboarding, smtp.as_ref());
    let mut directory = directory;
    for rule in &onboarding_rules {
        if let Some(date) = &rule.date {
            if !directory.attributes.dates.contains(&date.attribute) {
                directory.attributes.dates.push(date.attribute.clone());
            }
        }
    }

    if !report.problems.is_empty() {
        return Err(ConfigError {
            problems: report.problems,
        });
    }
    Ok(Loaded {
        config: Config {
            source,
            store,
            directory,
            admin,
            radius,
            web,
            federation,
            log,
            metrics,
            security,
            audit,
            policy,
            smtp,
            onboarding_rules,
        },
        warnings: report.warnings,
    })
}

fn policy(report: &mut Report<'_>, raw: &RawPolicy) -> PolicyConfig {
    let privileged_tap = match raw.privileged_tap.trim() {
        "allow" => PrivilegedTap::Allow,
        "alert" => PrivilegedTap::Alert,
        "deny" => PrivilegedTap::Deny,
        other => {
            report.problem(
                "policy.privileged_tap",
                format!("{other:?} is not one of allow, alert, deny"),
            );
            PrivilegedTap::default()
        }
    };
    PolicyConfig { privileged_tap }
}

fn audit(report: &mut Report<'_>, raw: &RawAudit) -> AuditConfig {
    AuditConfig {
        retention: audit_retention(report, raw),
        sign_in_flush: sign_in_flush(report, raw),
    }
}

/// `[audit] sign_in_flush` when the value given can't be used (the default is in `raw`).
const DEFAULT_SIGN_IN_FLUSH: Duration = Duration::from_millis(100);

/// Longest `[audit] sign_in_flush`: the sign-in events a crash may lose are bounded by it.
const MAX_SIGN_IN_FLUSH: Duration = Duration::from_secs(10);

fn sign_in_flush(report: &mut Report<'_>, raw: &RawAudit) -> Duration {
    let text = raw.sign_in_flush.trim();
    match parse_duration(text) {
        Ok(window) if window > MAX_SIGN_IN_FLUSH => {
            report.problem(
                "audit.sign_in_flush",
                format!(
                    "{text:?} is longer than {MAX_SIGN_IN_FLUSH:?}; a crash could lose that much \
                     sign-in audit (use e.g. \"100ms\", or \"0\" to store each event before \
                     answering)"
                ),
            );
            DEFAULT_SIGN_IN_FLUSH
        }
        Ok(window) => window,
        Err(err) => {
            report.problem(
                "audit.sign_in_flush",
                format!("{err}, or \"0\" to store each event before answering"),
            );
            DEFAULT_SIGN_IN_FLUSH
        }
    }
}

fn audit_retention(report: &mut Report<'_>, raw: &RawAudit) -> Option<Duration> {
    let text = raw.retention.trim();
    if text == "off" {
        return None;
    }
    match parse_duration(text) {
        Ok(retention) if retention.is_zero() => None,
        Ok(retention) if retention < Duration::from_secs(86_400) => {
            report.problem(
                "audit.retention",
                format!("{text:?} is less than a day; use at least \"1d\", or \"off\" to keep every event"),
            );
            None
        }
        Ok(retention) => Some(retention),
        Err(err) => {
            report.problem("audit.retention", format!("{err}, or \"off\""));
            None
        }
    }
}

fn store(report: &mut Report<'_>, raw: &RawStore) -> StoreConfig {
    let url = match StoreUrl::parse(&raw.url, report.base_dir) {
        Ok(StoreUrl::Sqlite(path)) => {
            if !path.is_absolute() {
                report.problem(
                    "store.url",
                    format!("{} is not an absolute path", path.display()),
                );
            }
            StoreUrl::Sqlite(path)
        }
        Ok(url) => url,
        Err(err) => {
            report.problem("store.url", err);
            StoreUrl::Sqlite(PathBuf::new())
        }
    };
    let postgres = match &url {
        StoreUrl::Postgres(text) => match crate::store::postgres::PostgresUrl::parse(text) {
            Ok(parsed) => Some(parsed),
            Err(err) => {
                report.problem("store.url", err);
                None
            }
        },
        StoreUrl::Sqlite(_) => None,
    };
    let password = raw
        .password_file
        .as_deref()
        .and_then(|file| report.secret("store.password_file", file));
    let ca_file = raw
        .ca_file
        .as_deref()
        .map(|file| report.later_file("store.ca_file", file));
    match &postgres {
        Some(parsed) => {
            if parsed.has_password() {
                if password.is_some() {
                    report.problem(
                        "store.password_file",
                        "store.url carries a password too; keep one of them",
                    );
                } else {
                    report.warn(
                        "store.url",
                        "carries a password; prefer store.password_file (a file only tapd can read)",
                    );
                }
            }
            if ca_file.is_some() && parsed.ssl_mode == crate::store::postgres::SslMode::Disable {
                report.warn("store.ca_file", "unused with sslmode=disable");
            }
            if let Some(problem) =
                parsed.transport_problem(ca_file.is_some(), raw.allow_insecure_transport)
            {
                report.problem("store.url", problem);
            }
        }
        None => {
            if raw.password_file.is_some() || raw.ca_file.is_some() {
                report.warn(
                    "store",
                    "password_file and ca_file apply to PostgreSQL only; ignored for SQLite",
                );
            }
        }
    }
    if raw.pool_size == 0 {
        report.problem("store.pool_size", "must be at least 1");
    }
    let secrets_key_file = match (&raw.secrets_key_file, &url) {
        (Some(file), _) => report.path("store.secrets_key_file", file),
        (None, StoreUrl::Sqlite(path)) => path
            .parent()
            .unwrap_or_else(|| std::path::Path::new("/var/lib/tapd"))
            .join(super::secrets_key::DEFAULT_FILE_NAME),
        (None, StoreUrl::Postgres(_)) => PathBuf::from(super::secrets_key::DEFAULT_POSTGRES_PATH),
    };
    // A missing key is created at first start; one that exists must be usable now.
    if secrets_key_file.exists() {
        if let Err(err) = super::secrets_key::read(&secrets_key_file) {
            report.problem("store.secrets_key_file", err.to_string());
        }
    }
    let secrets_previous_key_file = raw.secrets_previous_key_file.as_deref().map(|file| {
        let path = report.path("store.secrets_previous_key_file", file);
        if let Err(err) = super::secrets_key::read(&path) {
            report.problem("store.secrets_previous_key_file", err.to_string());
        }
        path
    });
    StoreConfig {
        url,
        busy_timeout: report.duration("store.busy_timeout", &raw.busy_timeout),
        password,
        ca_file,
        pool_size: raw.pool_size.max(1) as usize,
        statement_timeout: report
            .positive_duration("store.statement_timeout", &raw.statement_timeout),
        connect_timeout: report.positive_duration("store.connect_timeout", &raw.connect_timeout),
        secrets_key_file,
        secrets_previous_key_file,
        allow_insecure_transport: raw.allow_insecure_transport,
    }
}

fn directory(report: &mut Report<'_>, raw: &RawDirectory) -> DirectoryConfig {
    let preset = DirectoryPreset::parse(&raw.preset).unwrap_or_else(|| {
        report.problem(
            "directory.preset",
            format!(
                "{:?} is not a known preset (openldap, active_directory, 389ds)",
                raw.preset
            ),
        );
        DirectoryPreset::OpenLdap
    });

    let source = directory_source(report, raw);
    let is_ldap = matches!(source, Some(DirectorySource::Ldap { .. }));
    if is_ldap && raw.base_dn.trim().is_empty() {
        report.problem("directory.base_dn", "required for an LDAP directory");
    }

    let bind = match (&raw.bind_dn, &raw.bind_password_file) {
        (Some(dn), Some(file)) => {
            report.non_empty("directory.bind_dn", dn);
            report
                .secret("directory.bind_password_file", file)
                .map(|password| DirectoryBind {
                    dn: dn.clone(),
                    password,
                })
        }
        (Some(_), None) => {
            report.problem(
                "directory.bind_password_file",
                "required when bind_dn is set",
            );
            None
        }
        (None, Some(_)) => {
            report.problem(
                "directory.bind_dn",
                "required when bind_password_file is set",
            );
            None
        }
        (None, None) => {
            if is_ldap {
                report.warn(
                    "directory.bind_dn",
                    "not set: the directory is searched with an anonymous bind",
                );
            }
            None
        }
    };
    if !is_ldap && bind.is_some() {
        report.warn("directory.bind_dn", "ignored for a file: directory");
    }

    let ca_file = raw
        .ca_file
        .as_deref()
        .map(|file| report.later_file("directory.ca_file", file));
    if !raw.tls_verify {
        report.warn(
            "directory.tls_verify",
            "false: the directory's certificate is not checked; anyone on the path can read passwords",
        );
    }

    let connect_timeout =
        report.positive_duration("directory.connect_timeout", &raw.connect_timeout);
    let operation_timeout =
        report.positive_duration("directory.operation_timeout", &raw.operation_timeout);
    let sync_interval = report.duration("directory.sync_interval", &raw.sync_interval);
    if parse_duration(&raw.sync_interval).is_ok() && sync_interval < MIN_SYNC_INTERVAL {
        report.problem(
            "directory.sync_interval",
            format!("{:?} is below the minimum of 30s", raw.sync_interval),
        );
    }

    let incremental_interval =
        report.duration("directory.incremental_interval", &raw.incremental_interval);
    if !incremental_interval.is_zero() && incremental_interval < MIN_INCREMENTAL_INTERVAL {
        report.problem(
            "directory.incremental_interval",
            format!(
                "{:?} is below the minimum of 5s (use \"0s\" to turn incremental syncs off)",
                raw.incremental_interval
            ),
        );
    } else if !incremental_interval.is_zero()
        && !sync_interval.is_zero()
        && incremental_interval >= sync_interval
    {
        report.warn(
            "directory.incremental_interval",
            "not shorter than sync_interval: only full syncs will run",
        );
    }
    let incremental_interval = (!incremental_interval.is_zero()).then_some(incremental_interval);

    let user_filter = raw
        .user_filter
        .clone()
        .unwrap_or_else(|| preset.user_filter().to_owned());
    check_filter(report, "directory.user_filter", &user_filter);
    let group_filter = raw
        .group_filter
        .clone()
        .unwrap_or_else(|| preset.group_filter().to_owned());
    check_filter(report, "directory.group_filter", &group_filter);

    if raw.page_size == 0 {
        report.problem("directory.page_size", "must be at least 1");
    } else if raw.page_size > 1000 && preset == DirectoryPreset::ActiveDirectory {
        report.warn(
            "directory.page_size",
            format!(
                "{} exceeds Active Directory's MaxPageSize of 1000; AD will return 1000",
                raw.page_size
            ),
        );
    }
    if raw.bind_pool_size == 0 {
        report.problem("directory.bind_pool_size", "must be at least 1");
    }
    let max_percent = match u8::try_from(raw.deletion_guard_max_percent) {
        Ok(percent) if percent <= 100 => percent,
        _ => {
            report.problem(
                "directory.deletion_guard_max_percent",
                format!(
                    "{} is not a percentage (0–100)",
                    raw.deletion_guard_max_percent
                ),
            );
            100
        }
    };

    let mut attributes = preset.attributes();
    let overrides = [
        ("id", &raw.attributes.id, &mut attributes.id),
        (
            "username",
            &raw.attributes.username,
            &mut attributes.username,
        ),
        ("upn", &raw.attributes.upn, &mut attributes.upn),
        (
            "display_name",
            &raw.attributes.display_name,
            &mut attributes.display_name,
        ),
        ("mail", &raw.attributes.mail, &mut attributes.mail),
        ("member", &raw.attributes.member, &mut attributes.member),
        (
            "group_id",
            &raw.attributes.group_id,
            &mut attributes.group_id,
        ),
        (
            "group_name",
            &raw.attributes.group_name,
            &mut attributes.group_name,
        ),
    ];
    for (name, value, slot) in overrides {
        if let Some(value) = value {
            if is_attribute_name(value) {
                value.clone_into(slot);
            } else {
                report.problem(
                    &format!("directory.attributes.{name}"),
                    format!("{value:?} is not an LDAP attribute name or OID"),
                );
            }
        }
    }
    // An id override applies to groups too unless group_id is given.
    if raw.attributes.id.is_some() && raw.attributes.group_id.is_none() {
        attributes.group_id = attributes.id.clone();
    }

    let base_dn = raw.base_dn.trim().to_owned();
    DirectoryConfig {
        source: source.unwrap_or(DirectorySource::LdifFile(PathBuf::new())),
        preset,
        user_base: raw.user_base.clone().unwrap_or_else(|| base_dn.clone()),
        group_base: raw.group_base.clone().unwrap_or_else(|| base_dn.clone()),
        base_dn,
        bind,
        ca_file,
        tls_verify: raw.tls_verify,
        connect_timeout,
        operation_timeout,
        sync_interval,
        incremental_interval,
        user_filter,
        group_filter,
        page_size: raw.page_size,
        bind_pool_size: raw.bind_pool_size,
        deletion_guard: DeletionGuard {
            max_deletes: raw.deletion_guard_max_deletes,
            max_percent,
        },
        attributes,
    }
}

fn directory_source(report: &mut Report<'_>, raw: &RawDirectory) -> Option<DirectorySource> {
    let url = raw.url.trim();
    if url.is_empty() {
        report.problem(
            "directory.url",
            "required (ldaps://host, ldap://host with starttls = true, or file:PATH.ldif)",
        );
        return None;
    }
    if let Some(rest) = url.strip_prefix("file:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            report.problem("directory.url", format!("{url:?} names no file"));
            return None;
        }
        if raw.starttls {
            report.warn("directory.starttls", "ignored for a file: directory");
        }
        return Some(DirectorySource::LdifFile(
            report.later_file("directory.url", path),
        ));
    }
    let parsed = match LdapUrl::parse(url) {
        Ok(parsed) => parsed,
        Err(err) => {
            report.problem(
                "directory.url",
                format!("{err} (use ldaps://, ldap:// or file:PATH.ldif)"),
            );
            return None;
        }
    };
    let transport = match (parsed.ldaps, raw.starttls) {
        (true, true) => {
            report.problem(
                "directory.starttls",
                "cannot be combined with an ldaps:// URL",
            );
            LdapTransport::Ldaps
        }
        (true, false) => LdapTransport::Ldaps,
        (false, true) => LdapTransport::StartTls,
        (false, false) => {
            if !parsed.is_loopback() {
                report.problem(
                    "directory.url",
                    format!(
                        "{url:?} would send passwords in clear text: use ldaps:// or set directory.starttls = true"
                    ),
                );
            }
            LdapTransport::Plain
        }
    };
    Some(DirectorySource::Ldap {
        url: parsed,
        transport,
    })
}

/// A light syntax check: parenthesized, balanced.
fn check_filter(report: &mut Report<'_>, key: &str, filter: &str) {
    let mut depth: i64 = 0;
    let mut balanced = filter.starts_with('(') && filter.ends_with(')');
    for c in filter.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            balanced = false;
        }
    }
    if !balanced || depth != 0 {
        report.problem(
            key,
            format!("{filter:?} is not an LDAP filter (parenthesized, balanced)"),
        );
    }
}

/// RFC 4512 `descr` (letter, then letters, digits, hyphens) or a numeric OID.
fn is_attribute_name(name: &str) -> bool {
    let descr = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = name.contains('.')
        && name
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    descr || oid
}

fn admin(report: &mut Report<'_>, raw: &RawAdmin) -> AdminConfig {
    let socket = report.path("admin.socket", &raw.socket);
    let socket_len = socket.as_os_str().len();
    if raw.socket.is_empty() || raw.socket.ends_with('/') {
        report.problem("admin.socket", "must name a socket file");
    } else if socket_len > MAX_SOCKET_PATH_LEN {
        report.problem(
            "admin.socket",
            format!(
                "{} is {socket_len} bytes long; a Unix socket path can have at most {MAX_SOCKET_PATH_LEN}",
                socket.display()
            ),
        );
    }
    if let Some(group) = &raw.socket_group {
        let valid = !group.is_empty()
            && group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
        if !valid {
            report.problem(
                "admin.socket_group",
                format!("{group:?} is not a group name"),
            );
        }
    }
    let roles = RoleMapping {
        global_administrator: raw.roles.global_administrator.clone(),
        privileged_authentication_administrator: raw
            .roles
            .privileged_authentication_administrator
            .clone(),
        authentication_administrator: raw.roles.authentication_administrator.clone(),
        authentication_policy_administrator: raw.roles.authentication_policy_administrator.clone(),
        global_reader: raw.roles.global_reader.clone(),
    };
    for (role, groups) in roles.entries() {
        for (index, group) in groups.iter().enumerate() {
            report.non_empty(&format!("admin.roles.{role}[{index}]"), group);
        }
    }
    if roles.is_empty() && !raw.root_is_global_administrator {
        report.warn(
            "admin.roles",
            "no role is mapped and root_is_global_administrator = false: nobody can administer tapd",
        );
    }
    let connection_timeout =
        report.positive_duration("admin.connection_timeout", &raw.connection_timeout);
    AdminConfig {
        socket,
        socket_group: raw.socket_group.clone(),
        root_is_global_administrator: raw.root_is_global_administrator,
        roles,
        connection_timeout,
    }
}

fn radius(report: &mut Report<'_>, raw: &RawRadius, web: &WebConfig) -> RadiusConfig {
    let mut listen = Vec::new();
    for (index, text) in raw.listen.iter().enumerate() {
        let key = format!("radius.listen[{index}]");
        if let Some(addr) = report.socket_addr(&key, text) {
            if listen.contains(&addr) {
                report.problem(&key, format!("{addr} is listed twice"));
            }
            listen.push(addr);
        }
    }
    let directory_unavailable = match raw.directory_unavailable.as_str() {
        "drop" => DirectoryUnavailable::Drop,
        "reject" => DirectoryUnavailable::Reject,
        other => {
            report.problem(
                "radius.directory_unavailable",
                format!("{other:?} is not one of drop, reject"),
            );
            DirectoryUnavailable::Drop
        }
    };

    let mut clients: Vec<RadiusClient> = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut networks: HashMap<IpNetwork, usize> = HashMap::new();
    for (index, client) in raw.clients.iter().enumerate() {
        let key = format!("radius.clients[{index}]");
        if client.name.trim().is_empty() {
            report.problem(&format!("{key}.name"), "must not be empty");
        } else if let Some(first) = names.insert(client.name.as_str(), index) {
            report.problem(
                &format!("{key}.name"),
                format!(
                    "{:?} is already used by radius.clients[{first}]",
                    client.name
                ),
            );
        }
        let address = match IpNetwork::parse(&client.address) {
            Ok(network) => {
                if let Some(first) = networks.insert(network, index) {
                    report.problem(
                        &format!("{key}.address"),
                        format!("{network} is already used by radius.clients[{first}]"),
                    );
                }
                if network.prefix_len() == 0 {
                    report.warn(
                        &format!("{key}.address"),
                        format!("{network} admits every address"),
                    );
                }
                Some(network)
            }
            Err(err) => {
                report.problem(&format!("{key}.address"), err);
                None
            }
        };
        let secret = report.secret(&format!("{key}.secret_file"), &client.secret_file);
        if let Some(secret) = &secret {
            if secret.len() < MINIMUM_SECRET_LEN {
                report.problem(
                    &format!("{key}.secret_file"),
                    format!(
                        "the secret is {} bytes; at least {MINIMUM_SECRET_LEN} are required (RFC 2865 §3); generate one with: head -c 24 /dev/urandom | base64 > FILE",
                        secret.len()
                    ),
                );
            }
        }
        if !client.require_message_authenticator {
            report.warn(
                &format!("{key}.require_message_authenticator"),
                "false: requests without Message-Authenticator are accepted (BlastRADIUS, CVE-2024-3596); upgrade the client",
            );
        }
        let second_factor = second_factor(report, &key, client);
        if let (Some(address), Some(secret)) = (address, secret) {
            clients.push(RadiusClient {
                name: client.name.clone(),
                address,
                secret,
                require_message_authenticator: client.require_message_authenticator,
                second_factor,
            });
        }
    }
    if !listen.is_empty() && raw.clients.is_empty() {
        report.warn(
            "radius.clients",
            "RADIUS is listening but no client is configured: every packet will be dropped",
        );
    }
    if listen.is_empty() && !raw.clients.is_empty() {
        report.warn(
            "radius.listen",
            "empty: RADIUS is off, the configured clients are unused",
        );
    }
    if !listen.is_empty() && web.public_url.is_none() {
        report.warn(
            "web.public_url",
            "not set: RADIUS rejections of a TAP cannot tell the user where to use it",
        );
    }
    let reply_attributes = raw
        .reply_attributes
        .iter()
        .enumerate()
        .filter_map(|(index, rule)| reply_attribute(report, index, rule))
        .collect();
    let reject_delay = reject_delay(report, "radius.reject_delay", &raw.reject_delay);
    let challenge_lifetime =
        report.positive_duration("radius.challenge_lifetime", &raw.challenge_lifetime);
    if challenge_lifetime > MAX_CHALLENGE_LIFETIME {
        report.problem(
            "radius.challenge_lifetime",
            format!(
                "{:?} is longer than the maximum of {}s",
                raw.challenge_lifetime,
                MAX_CHALLENGE_LIFETIME.as_secs()
            ),
        );
    } else if !challenge_lifetime.is_zero() && challenge_lifetime < MIN_CHALLENGE_LIFETIME {
        // Zero and a bad value are named already.
        report.problem(
            "radius.challenge_lifetime",
            format!(
                "{:?} is shorter than the minimum of {}s: no user types a code that fast",
                raw.challenge_lifetime,
                MIN_CHALLENGE_LIFETIME.as_secs()
            ),
        );
    }
    RadiusConfig {
        listen,
        directory_unavailable,
        clients,
        reply_attributes,
        reject_delay,
        challenge_lifetime: challenge_lifetime.min(MAX_CHALLENGE_LIFETIME),
    }
}

/// Longest `challenge_lifetime`: an Access-Challenge's State is valid for 120 s at most.
pub(super) const MAX_CHALLENGE_LIFETIME: Duration = Duration::from_secs(120);

/// Shortest `challenge_lifetime` (as documented: 1 s to 120 s).
pub(super) const MIN_CHALLENGE_LIFETIME: Duration = Duration::from_secs(1);

/// Longest `second_factor_separator`, in characters.
const MAX_SEPARATOR_CHARS: usize = 4;

/// Reads a client's `second_factor`, `without_second_factor`, `second_factor_mode` and
/// `second_factor_separator`.
fn second_factor(
    report: &mut Report<'_>,
    key: &str,
    client: &RawRadiusClient,
) -> Option<TotpRequirement> {
    let defaults = RawRadiusClient::default();
    let totp = match client.second_factor.as_str() {
        "none" => false,
        "totp" => true,
        other => {
            report.problem(
                &format!("{key}.second_factor"),
                format!("{other:?} is not one of none, totp"),
            );
            false
        }
    };
    let without_app = match client.without_second_factor.as_str() {
        "reject" => WithoutSecondFactor::Reject,
        "accept" => WithoutSecondFactor::Accept,
        other => {
            report.problem(
                &format!("{key}.without_second_factor"),
                format!("{other:?} is not one of reject, accept"),
            );
            WithoutSecondFactor::Reject
        }
    };
    let separator = client.second_factor_separator.clone();
    let separator_key = format!("{key}.second_factor_separator");
    let chars = separator.chars().count();
    if chars == 0 || chars > MAX_SEPARATOR_CHARS {
        report.problem(
            &separator_key,
            format!("{separator:?}: must be 1 to {MAX_SEPARATOR_CHARS} characters"),
        );
    } else if separator
        .chars()
        .any(|c| c.is_ascii_digit() || c.is_whitespace() || c.is_control())
    {
        report.problem(
            &separator_key,
            format!("{separator:?}: must not contain a digit, whitespace or a control character (the code is digits)"),
        );
    }
    let mode = match client.second_factor_mode.as_str() {
        "challenge" => SecondFactorMode::Challenge,
        "append" => SecondFactorMode::Append { separator },
        other => {
            report.problem(
                &format!("{key}.second_factor_mode"),
                format!("{other:?} is not one of challenge, append"),
            );
            SecondFactorMode::Challenge
        }
    };
    if !totp {
        for (name, value, default) in [
            (
                "without_second_factor",
                &client.without_second_factor,
                &defaults.without_second_factor,
            ),
            (
                "second_factor_mode",
                &client.second_factor_mode,
                &defaults.second_factor_mode,
            ),
            (
                "second_factor_separator",
                &client.second_factor_separator,
                &defaults.second_factor_separator,
            ),
        ] {
            if value != default {
                report.warn(
                    &format!("{key}.{name}"),
                    "has no effect unless second_factor = \"totp\"",
                );
            }
        }
        return None;
    }
    Some(TotpRequirement { without_app, mode })
}

/// Longest `reject_delay` accepted: a NAS retransmits after a few seconds and gives up
/// after a few tries, and the reply cache holds a request "in flight" for 30 s.
pub(super) const MAX_REJECT_DELAY: Duration = Duration::from_secs(10);

fn reject_delay(report: &mut Report<'_>, key: &str, text: &str) -> Duration {
    let delay = report.duration(key, text);
    if delay > MAX_REJECT_DELAY {
        report.problem(
            key,
            format!(
                "{text:?} is longer than the maximum of {}s: clients would give up before the answer",
                MAX_REJECT_DELAY.as_secs()
            ),
        );
    }
    delay
}

/// Reads `[web]`'s connection limits (they apply to every TCP listener).
fn http_limits(report: &mut Report<'_>, raw: &RawWeb) -> HttpLimits {
    let header_timeout = report.positive_duration("web.header_timeout", &raw.header_timeout);
    let body_timeout = report.positive_duration("web.body_timeout", &raw.body_timeout);
    let request_timeout = report.positive_duration("web.request_timeout", &raw.request_timeout);
    if raw.max_connections_per_address == 0 {
        report.problem("web.max_connections_per_address", "must be at least 1");
    }
    HttpLimits {
        header_timeout,
        body_timeout,
        request_timeout,
        max_connections_per_address: usize::try_from(raw.max_connections_per_address.max(1))
            .unwrap_or(usize::MAX),
    }
}

/// Longest value of a RADIUS attribute (its length octet also counts type and length).
const MAX_RADIUS_VALUE_LEN: usize = 253;

fn reply_attribute(
    report: &mut Report<'_>,
    index: usize,
    raw: &RawReplyAttribute,
) -> Option<ReplyAttributeRule> {
    let key = format!("radius.reply_attributes[{index}]");
    let mut ok = true;
    if raw.group.trim().is_empty() {
        report.problem(&format!("{key}.group"), "required");
        ok = false;
    }
    if raw.class.is_none() && raw.filter_id.is_none() {
        report.problem(&key, "set class, filter_id or both");
        ok = false;
    }
    for (name, value) in [("class", &raw.class), ("filter_id", &raw.filter_id)] {
        if let Some(value) = value {
            if value.is_empty() || value.len() > MAX_RADIUS_VALUE_LEN {
                report.problem(
                    &format!("{key}.{name}"),
                    format!(
                        "is {} bytes; a RADIUS attribute holds 1 to {MAX_RADIUS_VALUE_LEN}",
                        value.len()
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then(|| ReplyAttributeRule {
        group: raw.group.clone(),
        class: raw.class.clone(),
        filter_id: raw.filter_id.clone(),
    })
}

fn web(report: &mut Report<'_>, raw: &RawWeb) -> WebConfig {
    let listen = report.optional_listen("web.listen", raw.listen.as_deref());
    let public_url = match raw.public_url.as_deref() {
        None | Some("") => None,
        Some(text) => match PublicUrl::parse(text) {
            Ok(url) => Some(url),
            Err(err) => {
                report.problem("web.public_url", err);
                None
            }
        },
    };
    let tls = match (raw.tls_cert_file.as_deref(), raw.tls_key_file.as_deref()) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert_file: report.later_file("web.tls_cert_file", cert),
            key_file: report.later_secret_file("web.tls_key_file", key),
        }),
        (Some(_), None) => {
            report.problem("web.tls_key_file", "required when tls_cert_file is set");
            None
        }
        (None, Some(_)) => {
            report.problem("web.tls_cert_file", "required when tls_key_file is set");
            None
        }
        (None, None) => None,
    };
    let has_tls = raw.tls_cert_file.is_some() || raw.tls_key_file.is_some();

    if let Some(addr) = listen {
        if raw.public_url.as_deref().unwrap_or("").is_empty() {
            report.problem("web.public_url", "required when web.listen is set");
        }
        if !addr.ip().is_loopback() && !has_tls && !raw.behind_tls_proxy {
            report.problem(
                "web.listen",
                format!(
                    "{addr} is not loopback: set web.tls_cert_file and web.tls_key_file, or web.behind_tls_proxy = true"
                ),
            );
        }
    }
    if let Some(url) = &public_url {
        let listen_loopback = listen.is_some_and(|addr| addr.ip().is_loopback());
        if !url.is_https()
            && !listen_loopback
            && !raw.behind_tls_proxy
            && !is_loopback_host(url.host())
        {
            report.problem(
                "web.public_url",
                format!(
                    "{url} uses http: only allowed when web.listen is loopback or web.behind_tls_proxy = true"
                ),
            );
        }
        if url.is_https() && listen.is_some() && !has_tls && !raw.behind_tls_proxy {
            report.warn(
                "web.public_url",
                format!(
                    "{url} is https but the site is served as plain HTTP (no TLS files, no proxy)"
                ),
            );
        }
        if url.host().parse::<std::net::IpAddr>().is_ok() {
            report.warn(
                "web.public_url",
                format!("{url} is an IP address: browsers refuse passkeys (WebAuthn) for IP addresses; use a host name"),
            );
        }
    }
    for (index, group) in raw.registration_interrupt_groups.iter().enumerate() {
        report.non_empty(
            &format!("web.registration_interrupt_groups[{index}]"),
            group,
        );
    }
    let mut trusted_proxies = Vec::new();
    for (index, text) in raw.trusted_proxies.iter().enumerate() {
        match IpNetwork::parse(text.trim()) {
            Ok(network) => trusted_proxies.push(network),
            Err(err) => report.problem(&format!("web.trusted_proxies[{index}]"), err),
        }
    }
    if raw.behind_tls_proxy && trusted_proxies.is_empty() {
        report.warn(
            "web.trusted_proxies",
            "web.behind_tls_proxy = true but no trusted_proxies are listed: X-Forwarded-For is ignored and every request is attributed to the proxy's address; list the proxy's address here",
        );
    }
    let limits = http_limits(report, raw);
    WebConfig {
        listen,
        public_url,
        tls,
        behind_tls_proxy: raw.behind_tls_proxy,
        trusted_proxies,
        limits,
        registration_interrupt_groups: raw.registration_interrupt_groups.clone(),
    }
}

fn federation(report: &mut Report<'_>, raw: &RawFederation, web: &WebConfig) -> FederationConfig {
    let listen = report.optional_listen("federation.listen", raw.listen.as_deref());
    if let Some(addr) = listen {
        if !addr.ip().is_loopback() && web.tls.is_none() && !web.behind_tls_proxy {
            report.problem(
                "federation.listen",
                format!(
                    "{addr} is not loopback and bearer tokens would travel in clear: set web.tls_cert_file and web.tls_key_file (used here too) or web.behind_tls_proxy = true"
                ),
            );
        }
    }
    let mut relying_parties: Vec<RelyingParty> = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut tokens: Vec<(usize, Secret)> = Vec::new();
    for (index, party) in raw.relying_parties.iter().enumerate() {
        let key = format!("federation.relying_parties[{index}]");
        if party.name.trim().is_empty() {
            report.problem(&format!("{key}.name"), "must not be empty");
        } else if let Some(first) = names.insert(party.name.as_str(), index) {
            report.problem(
                &format!("{key}.name"),
                format!(
                    "{:?} is already used by federation.relying_parties[{first}]",
                    party.name
                ),
            );
        }
        let token_key = format!("{key}.token_file");
        let Some(token) = report.secret(&token_key, &party.token_file) else {
            continue;
        };
        if token.expose().chars().count() < MIN_TOKEN_LEN {
            report.problem(
                &token_key,
                format!("the token must be at least {MIN_TOKEN_LEN} characters long"),
            );
        }
        if let Some((first, _)) = tokens
            .iter()
            .find(|(_, other)| other.ct_eq(token.as_bytes()))
        {
            report.problem(
                &token_key,
                format!(
                    "the same token as federation.relying_parties[{first}]: each relying party needs its own"
                ),
            );
        }
        tokens.push((index, token.clone()));
        relying_parties.push(RelyingParty {
            name: party.name.clone(),
            token,
        });
    }
    if !raw.relying_parties.is_empty() && listen.is_none() && web.listen.is_none() {
        report.warn(
            "federation.listen",
            "relying parties are configured but neither federation.listen nor web.listen is set: the endpoint is not served",
        );
    }
    let reject_delay = reject_delay(report, "federation.reject_delay", &raw.reject_delay);
    if reject_delay >= web.limits.request_timeout {
        report.problem(
            "federation.reject_delay",
            format!(
                "{:?} is not shorter than web.request_timeout: every rejection would end in 408 instead",
                raw.reject_delay
            ),
        );
    }
    FederationConfig {
        listen,
        relying_parties,
        reject_delay,
    }
}

fn log(report: &mut Report<'_>, raw: &RawLog) -> LogConfig {
    let level = match raw.level.to_ascii_lowercase().as_str() {
        "off" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => {
            report.problem(
                "log.level",
                format!(
                    "{:?} is not one of error, warn, info, debug, trace, off",
                    raw.level
                ),
            );
            log::LevelFilter::Info
        }
    };
    let format = match raw.format.as_str() {
        "auto" => LogFormat::Auto,
        "journal" => LogFormat::Journal,
        "stderr" => LogFormat::Stderr,
        other => {
            report.problem(
                "log.format",
                format!("{other:?} is not one of auto, journal, stderr"),
            );
            LogFormat::Auto
        }
    };
    LogConfig { level, format }
}

fn metrics(report: &mut Report<'_>, raw: &RawMetrics) -> MetricsConfig {
    if !raw.enabled {
        return MetricsConfig { listen: None };
    }
    let listen = report.socket_addr("metrics.listen", &raw.listen);
    if let Some(addr) = listen {
        if !addr.ip().is_loopback() {
            report.warn(
                "metrics.listen",
                format!("{addr} is not loopback: metrics are served without authentication"),
            );
        }
    }
    MetricsConfig { listen }
}

fn security(report: &mut Report<'_>, raw: &RawSecurity) -> SecurityConfig {
    let argon2_max_concurrent = match raw.argon2_max_concurrent {
        None => std::thread::available_parallelism().map_or(1, usize::from),
        Some(0) => {
            report.problem("security.argon2_max_concurrent", "must be at least 1");
            1
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    if raw.sign_in_max_failures == 0 {
        report.problem("security.sign_in_max_failures", "must be at least 1");
    }
    SecurityConfig {
        argon2_max_concurrent,
        sign_in_max_failures: raw.sign_in_max_failures.max(1),
        sign_in_failure_window: report.positive_duration(
            "security.sign_in_failure_window",
            &raw.sign_in_failure_window,
        ),
        sign_in_cooldown: report
            .positive_duration("security.sign_in_cooldown", &raw.sign_in_cooldown),
    }
}

/// Two TCP listeners on the same address would fail at bind time; say so now.
fn check_tcp_listeners(
    report: &mut Report<'_>,
    web: &WebConfig,
    federation: &FederationConfig,
    metrics: &MetricsConfig,
) {
    let listeners = [
        ("web.listen", web.listen),
        ("federation.listen", federation.listen),
        ("metrics.listen", metrics.listen),
    ];
    for (index, (key, addr)) in listeners.iter().enumerate() {
        let Some(addr) = addr else { continue };
        if addr.port() == 0 {
            continue;
        }
        if let Some((other, _)) = listeners[..index]
            .iter()
            .find(|(_, other)| *other == Some(*addr))
        {
            report.problem(key, format!("{addr} is also used by {other}"));
        }
    }
}
