//! The onboarding message: a subject, a plain-text part and an HTML part, with placeholders
//! (`{code}`, `{display_name}`, `{user}`, `{start}`, `{end}`, `{time_zone}`, `{usage}`,
//! `{sign_in_url}`) filled in when the message is sent. Built in (English), or read from
//! `[smtp] template_file` to translate or reword it; a file is checked when the configuration
//! is loaded, so an unknown placeholder or a missing part is a configuration error, never a
//! broken message.
//!
//! The file reads:
//!
//! ```text
//! Subject: Your Temporary Access Pass for {display_name}
//! --- text
//! …plain text…
//! --- html
//! …HTML…
//! ```
//!
//! In the HTML part every value is HTML-escaped. The code must appear in both parts.
//!
//! May depend on: nothing in the crate.

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "code",
    "display_name",
    "user",
    "start",
    "end",
    "time_zone",
    "usage",
    "sign_in_url",
];

const BUILT_IN: &str = "Subject: Temporary Access Pass for {display_name}
--- text
Hello,

a Temporary Access Pass was issued for {display_name} ({user}). Please hand it to them in
person or over a channel you trust; do not forward this message.

    Temporary Access Pass: {code}

It is valid from {start} until {end} ({time_zone}) and can be used {usage}.

What to do next: on the first day, {display_name} opens {sign_in_url}, signs in as
{user} with the Temporary Access Pass, and registers a passkey or an authenticator app.
After that the pass is no longer needed.

If you did not expect this message, tell your IT helpdesk.
--- html
<p>Hello,</p>
<p>a Temporary Access Pass was issued for <b>{display_name}</b> ({user}). Please hand it to them
in person or over a channel you trust; do not forward this message.</p>
<p style=\"font-size:1.4em\">Temporary Access Pass: <code>{code}</code></p>
<p>It is valid from <b>{start}</b> until <b>{end}</b> ({time_zone}) and can be used {usage}.</p>
<p>What to do next: on the first day, {display_name} opens
<a href=\"{sign_in_url}\">{sign_in_url}</a>, signs in as {user} with the Temporary Access Pass,
and registers a passkey or an authenticator app. After that the pass is no longer needed.</p>
<p>If you did not expect this message, tell your IT helpdesk.</p>
";

/// A checked template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailTemplate {
    subject: String,
    text: String,
    html: String,
}

/// The values a message is rendered with.
#[derive(Debug, Clone, Copy)]
pub struct MailValues<'a> {
    /// The TAP, in clear.
    pub code: &'a str,
    /// The new user's display name.
    pub display_name: &'a str,
    /// The sign-in name (UPN).
    pub user: &'a str,
    /// Start of the validity window, in the template's zone.
    pub start: &'a str,
    /// End of the validity window.
    pub end: &'a str,
    /// The zone's name.
    pub time_zone: &'a str,
    /// "once" or "as often as needed until it expires" (or the template's words).
    pub usage: &'a str,
    /// The web sign-in page.
    pub sign_in_url: &'a str,
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedMail {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
}

impl Default for MailTemplate {
    fn default() -> Self {
        #[allow(clippy::expect_used)] // the built-in template is checked by a unit test
        MailTemplate::parse(BUILT_IN).expect("built-in template parses")
    }
}

impl MailTemplate {
    /// Parses and checks a template file's text; the error names the problem (and the line).
    pub fn parse(text: &str) -> Result<MailTemplate, String> {
        let mut lines = text.lines().enumerate();
        let subject = loop {
            match lines.next() {
                Some((_, line)) if line.trim().is_empty() => continue,
                Some((_, line)) => match line.strip_prefix("Subject:") {
                    Some(subject) => break subject.trim().to_owned(),
                    None => return Err("the first line must be \"Subject: …\"".to_owned()),
                },
                None => return Err("the template is empty".to_owned()),
            }
        };
        if subject.is_empty() {
            return Err("the subject is empty".to_owned());
        }
        let mut text_part: Option<String> = None;
        let mut html_part: Option<String> = None;
        let mut current: Option<&mut String> = None;
        let mut text_buf = String::new();
        let mut html_buf = String::new();
        let mut seen_text = false;
        let mut seen_html = false;
        for (n, line) in lines {
            match line.trim_end() {
                "--- text" if !seen_text => {
                    seen_text = true;
                    current = Some(&mut text_buf);
                }
                "--- html" if !seen_html => {
                    seen_html = true;
                    current = Some(&mut html_buf);
                }
                marker if marker.starts_with("--- ") => {
                    return Err(format!(
                        "line {}: unexpected {marker:?} (one \"--- text\" and one \"--- html\")",
                        n + 1
                    ))
                }
                _ => match current.as_deref_mut() {
                    Some(buf) => {
                        buf.push_str(line);
                        buf.push('\n');
                    }
                    None if line.trim().is_empty() => {}
                    None => {
                        return Err(format!(
                            "line {}: text before \"--- text\" or \"--- html\"",
                            n + 1
                        ))
                    }
                },
            }
        }
        if seen_text {
            text_part = Some(text_buf);
        }
        if seen_html {
            html_part = Some(html_buf);
        }
        let text = text_part.ok_or("the \"--- text\" part is missing")?;
        let html = html_part.ok_or("the \"--- html\" part is missing")?;
        for (name, part) in [("subject", &subject), ("text", &text), ("html", &html)] {
            check_placeholders(name, part)?;
        }
        for (name, part) in [("text", &text), ("html", &html)] {
            if !part.contains("{code}") {
                return Err(format!("the {name} part does not contain {{code}}"));
            }
        }
        if subject.contains("{code}") {
            return Err("the subject must not contain {code} (subjects are logged)".to_owned());
        }
        Ok(MailTemplate {
            subject,
            text,
            html,
        })
    }

    /// The message for these values (HTML-escaped in the HTML part; the subject has its line
    /// breaks removed).
    pub fn render(&self, values: &MailValues<'_>) -> RenderedMail {
        let subject = fill(&self.subject, values, |s| s.replace(['\r', '\n'], " "));
        RenderedMail {
            subject,
            text: fill(&self.text, values, str::to_owned),
            html: fill(&self.html, values, html_escape),
        }
    }
}

fn check_placeholders(part: &str, text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("the {part} part has a \"{{\" without \"}}\""));
        };
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "the {part} part uses {{{name}}}, which is not one of {}",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

fn fill(template: &str, values: &MailValues<'_>, escape: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let value = match &after[..close] {
            "code" => values.code,
            "display_name" => values.display_name,
            "user" => values.user,
            "start" => values.start,
            "end" => values.end,
            "time_zone" => values.time_zone,
            "usage" => values.usage,
            "sign_in_url" => values.sign_in_url,
            other => {
                out.push('{');
                out.push_str(other);
                out.push('}');
                rest = &after[close + 1..];
                continue;
            }
        };
        out.push_str(&escape(value));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn values() -> MailValues<'static> {
        MailValues {
            code: "ABCD-1234",
            display_name: "Ann <b>Lee</b>",
            user: "ann@example.org",
            start: "2026-12-07 08:00",
            end: "2026-12-08 08:00",
            time_zone: "Europe/Berlin",
            usage: "once",
            sign_in_url: "https://tapd.example.org/sign-in",
        }
    }

    #[test]
    fn the_built_in_template_renders_the_code_in_both_parts_and_escapes_html() {
        let mail = MailTemplate::default().render(&values());
        assert_eq!(mail.subject, "Temporary Access Pass for Ann <b>Lee</b>");
        assert!(mail.text.contains("Temporary Access Pass: ABCD-1234"));
        assert!(mail
            .text
            .contains("2026-12-07 08:00 until 2026-12-08 08:00 (Europe/Berlin)"));
        assert!(mail.html.contains("<code>ABCD-1234</code>"));
        assert!(mail.html.contains("Ann &lt;b&gt;Lee&lt;/b&gt;"));
        assert!(!mail.html.contains("<b>Lee</b>"));
        assert!(mail
            .html
            .contains("href=\"https://tapd.example.org/sign-in\""));
    }

    #[test]
    fn a_template_file_is_checked_and_each_problem_named() {
        let ok =
            "Subject: Zugang für {display_name}\n--- text\nCode: {code}\n--- html\n<p>{code}</p>\n";
        let mail = MailTemplate::parse(ok).unwrap().render(&values());
        assert_eq!(mail.text, "Code: ABCD-1234\n");
        for (text, problem) in [
            ("", "empty"),
            ("Hello\n--- text\n{code}\n--- html\n{code}\n", "Subject:"),
            ("Subject: x\n--- text\n{code}\n", "html\" part is missing"),
            ("Subject: x\n--- html\n{code}\n", "text\" part is missing"),
            (
                "Subject: x\n--- text\n{cod}\n--- html\n{code}\n",
                "uses {cod}",
            ),
            (
                "Subject: x\n--- text\nno code\n--- html\n{code}\n",
                "text part does not contain {code}",
            ),
            (
                "Subject: {code}\n--- text\n{code}\n--- html\n{code}\n",
                "subject must not contain",
            ),
            (
                "Subject: x\nstray\n--- text\n{code}\n--- html\n{code}\n",
                "line 2",
            ),
        ] {
            let err = MailTemplate::parse(text).unwrap_err();
            assert!(err.contains(problem), "{text:?}: {err}");
        }
    }
}
