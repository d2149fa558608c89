//! Small value types a config file is made of, each with its own parser: durations
//! (`30s`, `5m`, `1h30m`), IP networks (`10.0.0.0/8`), store, LDAP and public URLs, paths
//! relative to the config file, and the `Secret` wrapper for anything read from a
//! `*_file`. Parsers return a plain message; the caller prefixes the key.
//!
//! Depends on std, `zeroize` and `subtle` only.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

/// A secret read from a file (RADIUS shared secret, federation token, LDAP bind password).
///
/// Its `Debug` never shows the value and the memory is zeroed when dropped. Compare with
/// `subtle` (constant time) where an attacker controls the other side.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value (mostly for tests; config loading reads files).
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret value. Use it, don't log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret as bytes, e.g. for HMAC keys.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Constant-time comparison with a presented value (token, secret).
    pub fn ct_eq(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.as_bytes().ct_eq(presented))
    }

    /// Whether the secret is empty (never true for a loaded config).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads a secret file: UTF-8, trailing newline (`\n` or `\r\n`) removed, must not be
/// empty. Every intermediate buffer is zeroed.
pub(crate) fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let mut bytes = Zeroizing::new(
        std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?,
    );
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Secret(Zeroizing::new(text))),
        Err(err) => {
            drop(Zeroizing::new(err.into_bytes()));
            Err(format!("{} is not valid UTF-8", path.display()))
        }
    }
}

/// Why a secret file's ownership or mode lets someone other than tapd read or replace it, with
/// the fix; `None` when it is safe: not group- or world-writable, not world-readable, and owned
/// by root or by the user tapd runs as. (Group-readable is allowed: packaging may give a
/// `tapd` group read access to a root-owned file.)
pub(crate) fn unsafe_secret_file(path: &Path) -> Option<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    let shown = path.display();
    if mode & 0o022 != 0 {
        let who = if mode & 0o002 != 0 {
            "every local user"
        } else {
            "its group"
        };
        return Some(format!(
            "{shown} can be replaced by {who} (mode {mode:04o}); run chmod 600 {shown}"
        ));
    }
    if mode & 0o004 != 0 {
        return Some(format!(
            "{shown} is readable by every local user (mode {mode:04o}); run chmod 600 {shown}"
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Some(format!(
            "{shown} is owned by uid {} (neither root nor tapd's uid {me}), who could replace it; \
             run chown root {shown} (or chown it to the user tapd runs as) and chmod 600 {shown}",
            meta.uid()
        ));
    }
    None
}

/// Parses a duration: one or more `<integer><unit>` parts with units `ms`, `s`, `m`, `h`,
/// `d` (`90s`, `5m`, `1h30m`), or a bare integer meaning seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (use e.g. \"30s\", \"5m\", \"1h30m\")");
    if text.is_empty() {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_millis: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = number
            .checked_mul(unit_millis)
            .map(Duration::from_millis)
            .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Formats a duration the way `parse_duration` reads it (`1h30m`, `45s`, `250ms`).
pub fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

/// An IP network: an address and a prefix length, host bits zero. A bare address is a
/// /32 (IPv4) or /128 (IPv6) network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix_len: u8,
}

impl IpNetwork {
    /// Parses `ADDR` or `ADDR/LEN`. Rejects prefix lengths beyond the family's width, set
    /// host bits (`10.0.0.1/8`: ambiguous, so refused with a suggestion), zone ids and
    /// surrounding text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let not_ip = || format!("{text:?} is not an IP address or CIDR");
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| not_ip())?;
        let width = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix_len = match prefix_text {
            None => width,
            Some(prefix) => {
                if prefix.is_empty()
                    || prefix.len() > 3
                    || !prefix.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(not_ip());
                }
                let len: u8 = prefix.parse().map_err(|_| not_ip())?;
                if len > width {
                    return Err(not_ip());
                }
                len
            }
        };
        let network = Self {
            addr: mask(addr, prefix_len),
            prefix_len,
        };
        if network.addr != addr {
            return Err(format!(
                "{text:?} has host bits set; did you mean \"{network}\"?"
            ));
        }
        Ok(network)
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, as
    /// a dual-stack socket reports IPv4 peers) matches the IPv4 network it maps to.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => match (self.addr, v6.to_ipv4_mapped()) {
                (IpAddr::V4(_), Some(v4)) => IpAddr::V4(v4),
                _ => ip,
            },
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix_len) == self.addr
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let masked = if prefix_len == 0 {
                0
            } else {
                bits & (u32::MAX << (32 - u32::from(prefix_len)))
            };
            IpAddr::V4(Ipv4Addr::from(masked))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let masked = if prefix_len == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - u32::from(prefix_len)))
            };
            IpAddr::V6(Ipv6Addr::from(masked))
        }
    }
}

/// Where the store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An SQLite database file (absolute after resolution against the config directory).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL, passed to the driver as written.
    Postgres(String),
}

impl StoreUrl {
    /// Parses `sqlite:PATH`, `sqlite://PATH`, `sqlite:///ABS/PATH` (relative paths resolved
    /// against `base_dir`) or `postgres://…` / `postgresql://…`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(format!("{text:?} names no database file"));
            }
            if path.contains('?') {
                return Err(format!("{text:?}: query parameters are not supported"));
            }
            return Ok(Self::Sqlite(resolve_path(base_dir, path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres(text.to_owned()));
        }
        Err(format!(
            "{text:?} is not a store URL (use sqlite:PATH or postgres://…)"
        ))
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&redact_password(url))
                .finish(),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

/// `postgres://user:pw@host/db` → `postgres://user:***@host/db`, for logs.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// How the connection to an LDAP server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LdapTransport {
    /// `ldaps://`: TLS from the first byte.
    Ldaps,
    /// `ldap://` upgraded with StartTLS.
    StartTls,
    /// `ldap://` in clear (only accepted for loopback hosts).
    Plain,
}

/// An LDAP server URL, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapUrl {
    /// The URL as written, without a trailing slash; what `ldap3` connects to.
    pub url: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (default 389 for `ldap://`, 636 for `ldaps://`).
    pub port: u16,
    /// Whether the URL is `ldaps://`.
    pub ldaps: bool,
}

impl LdapUrl {
    /// Parses `ldap://host[:port][/]` or `ldaps://host[:port][/]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (ldaps, rest) = if let Some(rest) = text.strip_prefix("ldaps://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("ldap://") {
            (false, rest)
        } else {
            return Err(format!("{text:?} is not an ldap:// or ldaps:// URL"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(format!(
                "{text:?}: a path (base DN) in the URL is not supported; use directory.base_dn"
            ));
        }
        let default_port = if ldaps { 636 } else { 389 };
        let (host, port) = split_host_port(authority, default_port)
            .ok_or_else(|| format!("{text:?} has no valid host[:port]"))?;
        Ok(Self {
            url: text.strip_suffix('/').unwrap_or(text).to_owned(),
            host,
            port,
            ldaps,
        })
    }

    /// Whether the host is `localhost` or a loopback address.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }
}

/// The public URL of the web site: an `http(s)://host[:port]` origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicUrl {
    origin: String,
    https: bool,
    host: String,
    port: u16,
}

impl PublicUrl {
    /// Parses an origin; a single trailing `/` is accepted, any other path, a query, a
    /// fragment or user info is refused (the site is served at the root, and WebAuthn binds
    /// to the origin).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{text:?} is not an http:// or https:// URL"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(format!(
                "{text:?} must be an origin (scheme://host[:port]) without path, query or fragment"
            ));
        }
        if authority.contains('@') {
            return Err(format!("{text:?} must not contain user info"));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = split_host_port(authority, default_port)
            .ok_or_else(|| format!("{text:?} has no valid host[:port]"))?;
        let host = host.to_ascii_lowercase();
        let scheme = if https { "https" } else { "http" };
        let origin = if port == default_port {
            format!("{scheme}://{}", bracket(&host))
        } else {
            format!("{scheme}://{}:{port}", bracket(&host))
        };
        Ok(Self {
            origin,
            https,
            host,
            port,
        })
    }

    /// The origin, `scheme://host[:port]`, default port omitted, no trailing slash.
    pub fn as_str(&self) -> &str {
        &self.origin
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host, lower-case, IPv6 without brackets; the WebAuthn relying-party id.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The effective port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Splits `host[:port]` / `[v6][:port]`; `None` when empty or malformed.
pub(crate) fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port_text) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<Ipv6Addr>().ok()?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !host_ok {
        return None;
    }
    let port = match port_text {
        None => default_port,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return None,
        },
    };
    Some((host.to_owned(), port))
}

/// Whether a host name is `localhost` (or a `.localhost` name) or a loopback address.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Resolves `path` against `base_dir` when relative, then normalizes it lexically
/// (`.` dropped, `..` pops a component). Lexical `..` is what an administrator reading the
/// file expects; it differs from the kernel only when the config directory is reached
/// through a symlink.
pub fn resolve_path(base_dir: &Path, path: &str) -> PathBuf {
    let joined = base_dir.join(path);
    let mut out = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other.as_os_str()),
        }
    }
    out
}
