//! Opening LDAP connections (plain loopback, StartTLS, LDAPS) with bounded waits, and the
//! paged search every sync uses.
//!
//! TLS uses rustls with the ring provider chosen explicitly (not the process default), the
//! configured CA file or else the system roots, and certificate plus host-name verification
//! unless `tls_verify = false` was configured. Every wait is bounded: the connect timeout covers
//! TCP, the StartTLS exchange and the TLS handshake; the operation timeout covers each bind and
//! each entry or result of a search.
//!
//! Paging (RFC 2696) is driven here rather than through `ldap3`'s adapter so that every page's
//! result code is checked: a size or time limit, a busy server or a lost connection on any page
//! makes the whole search fail, never return a silently shortened list.
//!
//! May depend on: `ldap3`, `rustls`, `directory` (errors), `entry`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ldap3::controls::{Control, ControlType, PagedResults, RawControl};
use ldap3::{
    Ldap, LdapConnAsync, LdapConnSettings, LdapError, LdapResult, ResultEntry, Scope, SearchStream,
};
use rustls::ClientConfig;

use super::content_sync::{self, Refresh, SyncUuid};
use super::entry::{decode_entry, LdapEntry};
use crate::directory::DirectoryError;

/// LDAP result codes tapd tells apart (RFC 4511 appendix A).
pub mod rc {
    /// success
    pub const SUCCESS: u32 = 0;
    /// timeLimitExceeded
    pub const TIME_LIMIT_EXCEEDED: u32 = 3;
    /// sizeLimitExceeded
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    /// adminLimitExceeded
    pub const ADMIN_LIMIT_EXCEEDED: u32 = 11;
    /// unavailableCriticalExtension
    pub const UNAVAILABLE_CRITICAL_EXTENSION: u32 = 12;
    /// noSuchObject
    pub const NO_SUCH_OBJECT: u32 = 32;
    /// invalidCredentials
    pub const INVALID_CREDENTIALS: u32 = 49;
    /// busy
    pub const BUSY: u32 = 51;
    /// unavailable
    pub const UNAVAILABLE: u32 = 52;
    /// unwillingToPerform
    pub const UNWILLING_TO_PERFORM: u32 = 53;
    /// other
    pub const OTHER: u32 = 80;
}

/// How to reach the server.
#[derive(Clone)]
pub struct Connector {
    url: String,
    starttls: bool,
    tls: Option<Arc<ClientConfig>>,
    connect_timeout: Duration,
    operation_timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// TLS settings for a connector.
#[derive(Clone, Debug)]
pub struct TlsOptions<'a> {
    /// Whether TLS is used at all (LDAPS or StartTLS).
    pub enabled: bool,
    /// Upgrade a plain `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// Extra trusted CAs (PEM); `None`: system roots.
    pub ca_file: Option<&'a Path>,
    /// Verify certificate and host name.
    pub verify: bool,
}

impl Connector {
    /// A connector for `url`.
    pub fn new(
        url: &str,
        tls: &TlsOptions<'_>,
        connect_timeout: Duration,
        operation_timeout: Duration,
    ) -> Result<Self, DirectoryError> {
        let config = if tls.enabled {
            Some(Arc::new(client_config(tls.ca_file, tls.verify)?))
        } else {
            None
        };
        Ok(Connector {
            url: url.to_owned(),
            starttls: tls.starttls,
            tls: config,
            connect_timeout,
            operation_timeout,
        })
    }

    /// The bound on each operation.
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a connection (TCP, then StartTLS or TLS when configured). The connection's I/O
    /// runs on a spawned task that ends when the returned handle and its clones are dropped
    /// or the server closes the connection.
    pub async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.connect_timeout)
            .set_starttls(self.starttls);
        if let Some(config) = &self.tls {
            settings = settings.set_config(config.clone());
        }
        let (connection, ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|e| {
                let message = format!("cannot connect to {}: {}", self.url, describe(&e));
                DirectoryError::unavailable_from(message, e)
            })?;
        let url = self.url.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.drive().await {
                log::debug!("LDAP connection to {url} ended: {e}");
            }
        });
        Ok(ldap)
    }

    /// Binds `ldap` as the service account; a refusal is [`DirectoryError::Unavailable`]
    /// (nothing can be read without it).
    pub async fn service_bind(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        password: &str,
    ) -> Result<(), DirectoryError> {
        let result = ldap
            .with_timeout(self.operation_timeout)
            .simple_bind(dn, password)
            .await
            .map_err(|e| self.transport_error("binding as the service account", e))?;
        if result.rc == rc::SUCCESS {
            Ok(())
        } else {
            Err(DirectoryError::unavailable(format!(
                "{} refused the service account bind as {dn}: {}",
                self.url,
                describe_result(&result)
            )))
        }
    }

    /// Maps a transport-level failure (timeout, connection lost) while doing `what`.
    pub fn transport_error(&self, what: &str, error: LdapError) -> DirectoryError {
        let message = format!("{} while {what}: {}", self.url, describe(&error));
        DirectoryError::unavailable_from(message, error)
    }

    /// Runs a subtree search with paged results, calling `on_entry` for every entry. Returns
    /// the number of pages read. Any page that does not end in success fails the whole search.
    pub async fn paged_search(
        &self,
        ldap: &mut Ldap,
        base: &str,
        filter: &str,
        attributes: &[String],
        page_size: u32,
        mut on_entry: impl FnMut(LdapEntry) -> Result<(), DirectoryError>,
    ) -> Result<usize, DirectoryError> {
        let mut cookie = Vec::new();
        let mut pages = 0;
        loop {
            pages += 1;
            cookie = self
                .search_page(
                    ldap,
                    base,
                    filter,
                    attributes,
                    page_size,
                    (cookie, pages),
                    &mut on_entry,
                )
                .await?;
            if cookie.is_empty() {
                return Ok(pages);
            }
        }
    }

    /// Reads one page of a paged subtree search, calling `on_entry` for every entry, and
    /// returns the cookie that asks for the next page (empty when the search is complete).
    /// `(cookie, page)`: the previous page's cookie (empty for the first page) and this page's
    /// number, for messages. A page that does not end in success is an error.
    #[allow(clippy::too_many_arguments)] // One search request's fields, each needed.
    pub async fn search_page(
        &self,
        ldap: &mut Ldap,
        base: &str,
        filter: &str,
        attributes: &[String],
        page_size: u32,
        (cookie, page): (Vec<u8>, usize),
        mut on_entry: impl FnMut(LdapEntry) -> Result<(), DirectoryError>,
    ) -> Result<Vec<u8>, DirectoryError> {
        let what = format!("searching {base} for {filter}");
        let size = i32::try_from(page_size).unwrap_or(i32::MAX);
        let control: RawControl = PagedResults { size, cookie }.into();
        ldap.with_controls(control)
            .with_timeout(self.operation_timeout);
        let mut stream = ldap
            .streaming_search(base, Scope::Subtree, filter, attributes)
            .await
            .map_err(|e| self.transport_error(&what, e))?;
        while let Some(item) = self.next_item(&mut stream, &what).await? {
            if item.is_ref() || item.is_intermediate() {
                log::debug!("{what}: ignoring a referral or intermediate response");
                continue;
            }
            let entry = decode_entry(item.0).map_err(|e| {
                DirectoryError::invalid_from(format!("{} returned a bad entry: {e}", self.url), e)
            })?;
            on_entry(entry)?;
        }
        let result = stream.finish().await;
        check_search_result(&self.url, &what, &result, page)?;
        Ok(next_cookie(&result))
    }

    /// Runs an RFC 4533 refreshOnly search from `cookie` (`None`: from nothing, so every entry
    /// comes back), calling `on_entry` for every entry sent in full, with its sync UUID, and
    /// gathering what the refresh says about the others ([`Refresh`]). Not paged: slapd's
    /// syncprov ends a paged refresh after its first page as if it were complete, so the
    /// service account needs a size limit that covers the entries (OpenLDAP: `limits`).
    #[allow(clippy::too_many_arguments)] // One search request's fields, each needed.
    pub async fn refresh(
        &self,
        ldap: &mut Ldap,
        base: &str,
        filter: &str,
        attributes: &[String],
        cookie: Option<Vec<u8>>,
        mut on_entry: impl FnMut(LdapEntry, SyncUuid) -> Result<(), RefreshError>,
    ) -> Result<Refresh, RefreshError> {
        let what = format!("refreshing {base} for {filter} (RFC 4533 content sync)");
        let mut refresh = Refresh::new(cookie.as_deref());
        ldap.with_controls(content_sync::request(cookie))
            .with_timeout(self.operation_timeout);
        let mut stream = ldap
            .streaming_search(base, Scope::Subtree, filter, attributes)
            .await
            .map_err(|e| RefreshError::Directory(self.transport_error(&what, e)))?;
        while let Some(item) = self
            .next_item(&mut stream, &what)
            .await
            .map_err(RefreshError::Directory)?
        {
            if item.is_ref() {
                continue;
            }
            if item.is_intermediate() {
                match content_sync::parse_intermediate(item.0) {
                    Ok(Some(info)) => refresh.info(info),
                    Ok(None) => log::debug!("{what}: ignoring an intermediate response"),
                    Err(e) => return Err(RefreshError::Unusable(e)),
                }
                continue;
            }
            let state = item
                .1
                .iter()
                .find(|control| control.1.ctype == content_sync::SYNC_STATE_OID)
                .and_then(|control| control.1.val.as_deref())
                .ok_or_else(|| {
                    RefreshError::Unusable("an entry came without a Sync State control".to_owned())
                })
                .and_then(|value| {
                    content_sync::parse_state(value).map_err(RefreshError::Unusable)
                })?;
            let uuid = state.uuid;
            let changed = matches!(
                state.state,
                content_sync::EntryState::Add | content_sync::EntryState::Modify
            );
            refresh.state(state);
            if changed {
                let entry = decode_entry(item.0).map_err(|e| {
                    RefreshError::Directory(DirectoryError::invalid(format!(
                        "{} returned a bad entry: {e}",
                        self.url
                    )))
                })?;
                on_entry(entry, uuid)?;
            }
        }
        let result = stream.finish().await;
        match result.rc {
            content_sync::E_SYNC_REFRESH_REQUIRED => return Err(RefreshError::CookieRejected),
            rc::SIZE_LIMIT_EXCEEDED
            | rc::ADMIN_LIMIT_EXCEEDED
            | rc::UNAVAILABLE_CRITICAL_EXTENSION
            | rc::UNWILLING_TO_PERFORM => {
                return Err(RefreshError::Unusable(describe_result(&result)));
            }
            _ => check_search_result(&self.url, &what, &result, 1)
                .map_err(RefreshError::Directory)?,
        }
        let done = result
            .ctrls
            .iter()
            .find(|control| control.1.ctype == content_sync::SYNC_DONE_OID)
            .ok_or_else(|| {
                RefreshError::Unusable("the result came without a Sync Done control".to_owned())
            })?;
        let done = content_sync::parse_done(done.1.val.as_deref().unwrap_or_default())
            .map_err(RefreshError::Unusable)?;
        refresh.done(done);
        Ok(refresh)
    }

    /// The next message of a search, `None` after the last; a lost connection or a timeout
    /// ends the search as [`DirectoryError::Unavailable`].
    async fn next_item<'a, S, A>(
        &self,
        stream: &mut SearchStream<'a, S, A>,
        what: &str,
    ) -> Result<Option<ResultEntry>, DirectoryError>
    where
        S: AsRef<str> + Send + Sync + 'a,
        A: AsRef<[S]> + Send + Sync + 'a,
    {
        match stream.next().await {
            Ok(item) => Ok(item),
            Err(e) => {
                let _ = stream.finish().await;
                Err(self.transport_error(what, e))
            }
        }
    }

    /// Reads one entry (base scope) with `attributes`; `None` if it does not exist.
    pub async fn read_entry(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        attributes: &[String],
    ) -> Result<Option<LdapEntry>, DirectoryError> {
        let what = format!("reading {dn}");
        let result = ldap
            .with_timeout(self.operation_timeout)
            .search(dn, Scope::Base, "(objectClass=*)", attributes)
            .await
            .map_err(|e| self.transport_error(&what, e))?;
        let (entries, done) = (result.0, result.1);
        if done.rc == rc::NO_SUCH_OBJECT {
            return Ok(None);
        }
        check_search_result(&self.url, &what, &done, 1)?;
        match entries
            .into_iter()
            .find(|e| !e.is_ref() && !e.is_intermediate())
        {
            Some(entry) => decode_entry(entry.0).map(Some).map_err(|e| {
                DirectoryError::invalid_from(format!("{} returned a bad entry: {e}", self.url), e)
            }),
            None => Ok(None),
        }
    }
}

/// Why a content-sync refresh ([`Connector::refresh`]) gave no answer.
#[derive(Debug)]
pub enum RefreshError {
    /// The directory failed as it can for any search (down, timed out, returned bad data).
    Directory(DirectoryError),
    /// e-syncRefreshRequired: the server can't refresh from this cookie; start without one.
    CookieRejected,
    /// Content sync can't be used with this server or account now: a size limit, the control
    /// refused, or a malformed answer. The caller reads by timestamp instead.
    Unusable(String),
}

/// Classifies a search's final result.
fn check_search_result(
    url: &str,
    what: &str,
    result: &LdapResult,
    page: usize,
) -> Result<(), DirectoryError> {
    let detail = || {
        format!(
            "{url} while {what} (page {page}): {}",
            describe_result(result)
        )
    };
    match result.rc {
        rc::SUCCESS => Ok(()),
        rc::SIZE_LIMIT_EXCEEDED | rc::TIME_LIMIT_EXCEEDED | rc::ADMIN_LIMIT_EXCEEDED => {
            Err(DirectoryError::incomplete(detail()))
        }
        rc::NO_SUCH_OBJECT => Err(DirectoryError::invalid(format!(
            "{}; check the search base",
            detail()
        ))),
        _ => Err(DirectoryError::unavailable(detail())),
    }
}

/// The paging cookie of a result; empty when the search is complete.
fn next_cookie(result: &LdapResult) -> Vec<u8> {
    result
        .ctrls
        .iter()
        .find_map(|Control(kind, raw)| match kind {
            Some(ControlType::PagedResults) => Some(raw.parse::<PagedResults>().cookie),
            _ => None,
        })
        .unwrap_or_default()
}

/// One line for an `ldap3` error, without the noise of nested debug output.
pub fn describe(error: &LdapError) -> String {
    match error {
        LdapError::Timeout { .. } => "timed out".to_owned(),
        LdapError::LdapResult { result } => describe_result(result),
        other => other.to_string(),
    }
}

/// `rc 49 (invalidCredentials): text`.
pub fn describe_result(result: &LdapResult) -> String {
    let name = match result.rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        8 => "strongerAuthRequired",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        _ => "",
    };
    let mut line = format!("result code {}", result.rc);
    if !name.is_empty() {
        line.push_str(&format!(" ({name})"));
    }
    if !result.text.is_empty() {
        line.push_str(": ");
        line.push_str(result.text.trim());
    }
    line
}

/// Builds the rustls client configuration.
fn client_config(ca_file: Option<&Path>, verify: bool) -> Result<ClientConfig, DirectoryError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DirectoryError::unavailable_from(format!("TLS setup failed: {e}"), e))?;
    if !verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AcceptAnyCertificate(provider)))
            .with_no_client_auth());
    }
    let roots =
        crate::tls::root_store(ca_file, "directory").map_err(DirectoryError::Unavailable)?;
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}
