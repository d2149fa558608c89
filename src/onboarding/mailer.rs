//! The SMTP client of the outbox: one pooled lettre transport per daemon, built from
//! `[smtp]`, and the rendering of one outbox row into a MIME message (plain text and HTML).

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::mail_template::MailValues;
use crate::config::{SmtpConfig, SmtpSecurity};
use crate::model::{OutboxMail, Timestamp};

/// Why the mailer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    /// `smtp.ca_file` could not be read.
    #[error("smtp.ca_file {path}: {source}")]
    CaFile {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TLS settings were refused (a CA file that holds no certificate…).
    #[error("SMTP TLS settings: {0}")]
    Tls(#[source] lettre::transport::smtp::Error),
    /// `smtp.from` does not parse (checked by `config` already).
    #[error("smtp.from: {0}")]
    From(#[source] lettre::address::AddressError),
}

/// How one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    /// The server refused for good (5xx), or the message can't be built: retrying can't help.
    pub permanent: bool,
    /// What the server or the network said.
    pub message: String,
}

/// Sends rendered outbox messages.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    config: SmtpConfig,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.config.server)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The transport `config` describes; connections are opened on the first message.
    pub fn new(config: &SmtpConfig, max_connections: u32) -> Result<Mailer, MailerError> {
        let server = &config.server;
        let mut tls = TlsParameters::builder(server.host.clone());
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|source| MailerError::CaFile {
                path: path.display().to_string(),
                source,
            })?;
            let cert = Certificate::from_pem(&pem).map_err(MailerError::Tls)?;
            tls = tls
                .certificate_store(CertificateStore::None)
                .add_root_certificate(cert);
        }
        let tls = tls.build_rustls().map_err(MailerError::Tls)?;
        let tls = match server.security {
            SmtpSecurity::Tls => Tls::Wrapper(tls),
            SmtpSecurity::StartTlsRequired => Tls::Required(tls),
            SmtpSecurity::StartTlsOpportunistic => Tls::Opportunistic(tls),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&server.host)
            .port(server.port)
            .tls(tls)
            .timeout(Some(config.timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(max_connections.max(1))
                    .idle_timeout(Duration::from_secs(30)),
            );
        if let Some((user, password)) = &config.credentials {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        let from: Mailbox = config.from.parse().map_err(MailerError::From)?;
        Ok(Mailer {
            transport: builder.build(),
            from,
            config: config.clone(),
        })
    }

    /// The message for `mail` carrying `code`, rendered with the template.
    pub fn render(&self, mail: &OutboxMail, code: &str) -> Result<Message, SendFailure> {
        let permanent = |message: String| SendFailure {
            permanent: true,
            message,
        };
        let to: Mailbox = mail
            .recipient
            .parse()
            .map_err(|e| permanent(format!("recipient {:?}: {e}", mail.recipient)))?;
        let zone = &self.config.time_zone;
        let zone_name = zone.iana_name().unwrap_or("UTC");
        let start = local_time(mail.tap_start, zone);
        let end = local_time(mail.tap_expires, zone);
        let usage = if mail.one_time {
            "once"
        } else {
            "as often as needed until it expires"
        };
        let rendered = self.config.template.render(&MailValues {
            code,
            display_name: &mail.display_name,
            user: &mail.user_principal_name,
            start: &start,
            end: &end,
            time_zone: zone_name,
            usage,
            sign_in_url: &self.config.sign_in_url,
        });
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|e| permanent(format!("the message can't be built: {e}")))
    }

    /// One delivery attempt.
    pub async fn send(&self, message: Message) -> Result<(), SendFailure> {
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) => Err(SendFailure {
                permanent: e.is_permanent(),
                message: crate::logging::ErrorChain(&e).to_string(),
            }),
        }
    }
}

/// `t` in `zone`, to the minute, as the message shows it.
fn local_time(t: Timestamp, zone: &jiff::tz::TimeZone) -> String {
    match jiff::Timestamp::from_microsecond(t.timestamp_micros()) {
        Ok(ts) => ts
            .to_zoned_datetime(zone.clone())
            .strftime("%Y-%m-%d %H:%M")
            .to_string(),
        Err(_) => t.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}
