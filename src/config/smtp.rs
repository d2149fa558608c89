//! `[smtp]`: checked as one section, every problem named by its key.

use super::super::mail_template::MailTemplate;
use super::super::raw::{RawOnboarding, RawSmtp};
use super::super::values::{is_loopback_host, split_host_port};
use super::super::{
    DateTrigger, OnboardingRule, RuleRecipient, SmtpConfig, SmtpSecurity, SmtpServer, WebConfig,
};
use super::{is_attribute_name, Report};

/// The `[smtp]` section; `None` when `url` is empty (no mail is sent).
pub(super) fn smtp(report: &mut Report<'_>, raw: &RawSmtp, web: &WebConfig) -> Option<SmtpConfig> {
    if raw.url.trim().is_empty() {
        let set: Vec<&str> = [
            ("from", !raw.from.is_empty()),
            ("username", raw.username.is_some()),
            ("password_file", raw.password_file.is_some()),
            ("ca_file", raw.ca_file.is_some()),
            ("template_file", raw.template_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        if !set.is_empty() {
            report.warn(
                "smtp.url",
                format!(
                    "empty, so no mail is sent and smtp.{} is ignored",
                    set.join(", smtp.")
                ),
            );
        }
        return None;
    }
    let server = match parse_url(raw.url.trim()) {
        Ok(server) => Some(server),
        Err(err) => {
            report.problem("smtp.url", err);
            None
        }
    };
    if raw.from.trim().is_empty() {
        report.problem("smtp.from", "required when smtp.url is set");
    } else if let Err(err) = raw.from.parse::<lettre::message::Mailbox>() {
        report.problem(
            "smtp.from",
            format!(
                "{:?} is not a mail address (\"Name <user@host>\" or \"user@host\"): {err}",
                raw.from
            ),
        );
    }
    let credentials = match (&raw.username, &raw.password_file) {
        (Some(user), Some(file)) => {
            if user.trim().is_empty() {
                report.problem("smtp.username", "must not be empty");
            }
            report
                .secret("smtp.password_file", file)
                .map(|password| (user.clone(), password))
        }
        (Some(_), None) => {
            report.problem("smtp.password_file", "required when smtp.username is set");
            None
        }
        (None, Some(_)) => {
            report.problem("smtp.username", "required when smtp.password_file is set");
            None
        }
        (None, None) => None,
    };
    if let (Some(_), Some(server)) = (&credentials, &server) {
        if server.security == SmtpSecurity::StartTlsOpportunistic {
            report.warn(
                "smtp.url",
                "the password may be sent without TLS to this loopback server if it offers no STARTTLS",
            );
        }
    }
    let ca_file = raw
        .ca_file
        .as_deref()
        .map(|file| report.later_file("smtp.ca_file", file));
    let template = match raw.template_file.as_deref() {
        None => MailTemplate::default(),
        Some(file) => {
            let path = report.path("smtp.template_file", file);
            match std::fs::read_to_string(&path) {
                Ok(text) => MailTemplate::parse(&text).unwrap_or_else(|err| {
                    report.problem("smtp.template_file", format!("{}: {err}", path.display()));
                    MailTemplate::default()
                }),
                Err(err) => {
                    report.problem(
                        "smtp.template_file",
                        format!("cannot read {}: {err}", path.display()),
                    );
                    MailTemplate::default()
                }
            }
        }
    };
    let time_zone = match jiff::tz::TimeZone::get(raw.time_zone.trim()) {
        Ok(zone) => zone,
        Err(err) => {
            report.problem(
                "smtp.time_zone",
                format!(
                    "{:?} is not a known time zone (an IANA name such as \"Europe/Berlin\"): {err}",
                    raw.time_zone
                ),
            );
            jiff::tz::TimeZone::UTC
        }
    };
    if raw.max_attempts == 0 {
        report.problem("smtp.max_attempts", "must be at least 1");
    }
    let retry_initial = report.positive_duration("smtp.retry_initial", &raw.retry_initial);
    let retry_max = report.positive_duration("smtp.retry_max", &raw.retry_max);
    if retry_max < retry_initial {
        report.problem(
            "smtp.retry_max",
            "must not be shorter than smtp.retry_initial",
        );
    }
    let timeout = report.positive_duration("smtp.timeout", &raw.timeout);
    let sign_in_url = match &web.public_url {
        Some(url) => format!("{}/sign-in", url.as_str()),
        None => {
            report.problem(
                "smtp.url",
                "needs web.public_url: every message tells where to sign in with the pass",
            );
            String::new()
        }
    };
    Some(SmtpConfig {
        server: server?,
        from: raw.from.trim().to_owned(),
        credentials,
        ca_file,
        template,
        time_zone,
        max_attempts: raw.max_attempts.max(1),
        retry_initial,
        retry_max,
        timeout,
        sign_in_url,
    })
}

fn parse_url(text: &str) -> Result<SmtpServer, String> {
    let (tls, rest) = if let Some(rest) = text.strip_prefix("smtps://") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix("smtp://") {
        (false, rest)
    } else {
        return Err(format!("{text:?} is not an smtps:// or smtp:// URL"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{text:?} must be scheme://host[:port] (credentials go in smtp.username and smtp.password_file)"
        ));
    }
    let (host, port) = split_host_port(authority, if tls { 465 } else { 587 })
        .ok_or_else(|| format!("{text:?} has no valid host[:port]"))?;
    let security = if tls {
        SmtpSecurity::Tls
    } else if is_loopback_host(&host) {
        SmtpSecurity::StartTlsOpportunistic
    } else {
        SmtpSecurity::StartTlsRequired
    };
    Ok(SmtpServer {
        host,
        port,
        security,
    })
}

/// `[[onboarding.rules]]`: each needs `[smtp]`, a unique name, and a group or a date attribute.
pub(super) fn onboarding_rules(
    report: &mut Report<'_>,
    raw: &RawOnboarding,
    smtp: Option<&SmtpConfig>,
) -> Vec<OnboardingRule> {
    let mut rules: Vec<OnboardingRule> = Vec::new();
    for (i, rule) in raw.rules.iter().enumerate() {
        let key = |field: &str| format!("onboarding.rules[{i}].{field}");
        if smtp.is_none() {
            report.problem(
                &key("name"),
                "a rule mails each pass: configure [smtp] url and from",
            );
        }
        let name = rule.name.trim();
        if name.is_empty() {
            report.problem(&key("name"), "required");
        } else if rules.iter().any(|r| r.name == name) {
            report.problem(&key("name"), format!("{name:?} is used by another rule"));
        }
        let group = rule.group.as_deref().map(str::trim).map(str::to_owned);
        if group.as_deref() == Some("") {
            report.problem(
                &key("group"),
                "must not be empty (leave it out to match by date alone)",
            );
        }
        let date = match rule.date_attribute.as_deref().map(str::trim) {
            None => None,
            Some(attribute) if is_attribute_name(attribute) => Some(DateTrigger {
                attribute: attribute.to_ascii_lowercase(),
                days_before: rule.days_before,
            }),
            Some(attribute) => {
                report.problem(
                    &key("date_attribute"),
                    format!("{attribute:?} is not an LDAP attribute name"),
                );
                None
            }
        };
        if group.is_none() && rule.date_attribute.is_none() {
            report.problem(
                &key("group"),
                "a rule needs a group, a date_attribute, or both",
            );
        }
        if rule.date_attribute.is_none() && rule.days_before != 0 {
            report.problem(&key("days_before"), "only applies with date_attribute");
        }
        if rule.days_before > 365 {
            report.problem(&key("days_before"), "at most 365");
        }
        let recipient = match rule.recipient.as_deref().map(str::trim) {
            None | Some("manager") => RuleRecipient::Manager,
            Some(address) => {
                if let Err(e) = address.parse::<lettre::Address>() {
                    report.problem(
                        &key("recipient"),
                        format!("{address:?} is neither \"manager\" nor a mail address: {e}"),
                    );
                }
                RuleRecipient::Mailbox(address.to_owned())
            }
        };
        let lifetime_in_minutes = rule.lifetime.as_deref().map(|text| {
            let lifetime = report.positive_duration(&key("lifetime"), text);
            i64::try_from(lifetime.as_secs() / 60).unwrap_or(i64::MAX)
        });
        let start_time = rule.start_time.as_deref().and_then(|text| {
            let parsed = text.split_once(':').and_then(|(h, m)| {
                let (h, m) = (h.parse::<i8>().ok()?, m.parse::<i8>().ok()?);
                ((0..24).contains(&h) && (0..60).contains(&m) && text.len() == 5).then_some((h, m))
            });
            if parsed.is_none() {
                report.problem(
                    &key("start_time"),
                    format!("{text:?} is not a time of day HH:MM (e.g. \"08:00\")"),
                );
            }
            parsed
        });
        let time_zone = match &rule.time_zone {
            Some(name) => jiff::tz::TimeZone::get(name.trim()).unwrap_or_else(|err| {
                report.problem(
                    &key("time_zone"),
                    format!("{name:?} is not a known time zone: {err}"),
                );
                jiff::tz::TimeZone::UTC
            }),
            None => smtp.map_or(jiff::tz::TimeZone::UTC, |s| s.time_zone.clone()),
        };
        if rule.start_after_days > 365 {
            report.problem(&key("start_after_days"), "at most 365");
        }
        rules.push(OnboardingRule {
            name: name.to_owned(),
            group,
            recipient,
            date,
            lifetime_in_minutes,
            start_time,
            start_after_days: rule.start_after_days,
            time_zone,
            one_time: rule.one_time,
            include_admins: rule.include_admins,
        });
    }
    rules
}
