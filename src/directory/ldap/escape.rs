//! Escaping of values that tapd puts into LDAP filters (RFC 4515) and distinguished names
//! (RFC 4514).
//!
//! Every value that did not come from tapd's own configuration (a user name typed at a prompt,
//! an id read back from the store) goes through one of these before it is spliced into a
//! filter or a DN, so that `*`, `)(uid=*` or `,ou=admins` stay literal characters and can never
//! widen a search or point a bind somewhere else.
//!
//! May depend on: nothing but std.

use std::fmt::Write as _;

/// Escapes `value` for use as an assertion value inside a filter (RFC 4515 §3): `*`, `(`,
/// `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c` and `\00`. Everything else, non-ASCII
/// UTF-8 included, is kept as is (RFC 4515 allows UTF-8 in filter strings).
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0' => push_hex(&mut out, c as u8),
            c => out.push(c),
        }
    }
    out
}

/// Escapes arbitrary octets (a binary `objectGUID`) for a filter: every octet as `\xx`.
pub fn escape_filter_bytes(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for &byte in value {
        push_hex(&mut out, byte);
    }
    out
}

/// Escapes `value` for use as an attribute value in a DN (RFC 4514 §2.4).
///
/// Escaped with a backslash: `"`, `+`, `,`, `;`, `<`, `>`, `\` and also `=` (allowed
/// unescaped by the RFC, but lax parsers split on it), a leading space or `#`, and a trailing
/// space. NUL and other ASCII control characters become `\xx` hex pairs. Non-ASCII characters
/// are kept as UTF-8, which RFC 4514 permits.
pub fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            c if c.is_ascii_control() => push_hex(&mut out, c as u8),
            c => out.push(c),
        }
    }
    out
}

fn push_hex(out: &mut String, byte: u8) {
    // Writing to a String cannot fail.
    let _ = write!(out, "\\{byte:02x}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_escape_the_rfc_4515_specials() {
        assert_eq!(escape_filter_value("alice"), "alice");
        assert_eq!(escape_filter_value("*"), "\\2a");
        assert_eq!(escape_filter_value(")(uid=*"), "\\29\\28uid=\\2a");
        assert_eq!(escape_filter_value("a\\b"), "a\\5cb");
        assert_eq!(escape_filter_value("nul\0"), "nul\\00");
        assert_eq!(escape_filter_value("Jürgen*"), "Jürgen\\2a");
        // Characters meaningful only in DNs are plain in filters.
        assert_eq!(escape_filter_value("a,b+c=d#e"), "a,b+c=d#e");
    }

    #[test]
    fn escaped_filter_values_contain_no_unescaped_specials() {
        for input in [
            "*",
            "*)(|(uid=*",
            "\\2a",
            "x)(objectClass=*))(&(uid=x",
            "((((",
            "\0*",
        ] {
            let escaped = escape_filter_value(input);
            let mut chars = escaped.chars();
            while let Some(c) = chars.next() {
                assert!(
                    !matches!(c, '*' | '(' | ')' | '\0'),
                    "{input:?} -> {escaped:?}"
                );
                if c == '\\' {
                    let hex: String = chars.by_ref().take(2).collect();
                    assert!(u8::from_str_radix(&hex, 16).is_ok(), "{escaped:?}");
                }
            }
        }
    }

    #[test]
    fn filter_bytes_are_all_hex() {
        assert_eq!(escape_filter_bytes(&[0x00, 0x2a, 0xff]), "\\00\\2a\\ff");
        assert_eq!(escape_filter_bytes(&[]), "");
    }

    #[test]
    fn dn_values_escape_the_rfc_4514_specials() {
        assert_eq!(escape_dn_value("alice"), "alice");
        assert_eq!(escape_dn_value("Smith, John"), "Smith\\, John");
        assert_eq!(escape_dn_value("a+b=c"), "a\\+b\\=c");
        assert_eq!(escape_dn_value("x\\y"), "x\\\\y");
        assert_eq!(escape_dn_value("\"q\";<>"), "\\\"q\\\"\\;\\<\\>");
        assert_eq!(escape_dn_value("#hash"), "\\#hash");
        assert_eq!(escape_dn_value("mid#hash"), "mid#hash");
        assert_eq!(escape_dn_value(" padded "), "\\ padded\\ ");
        assert_eq!(escape_dn_value(" "), "\\ ");
        assert_eq!(escape_dn_value("in side"), "in side");
        assert_eq!(escape_dn_value("nul\0"), "nul\\00");
        assert_eq!(escape_dn_value("Zoë (ops)*"), "Zoë (ops)*");
        assert_eq!(escape_dn_value(""), "");
    }

    #[test]
    fn an_escaped_dn_value_cannot_add_an_rdn() {
        let escaped = escape_dn_value("x,ou=admins,dc=example,dc=org");
        let dn = format!("uid={escaped},ou=people,dc=example,dc=org");
        // Only the three separators written here are unescaped commas.
        let mut unescaped_commas = 0;
        let mut chars = dn.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                ',' => unescaped_commas += 1,
                _ => {}
            }
        }
        assert_eq!(unescaped_commas, 3, "{dn}");
    }
}
