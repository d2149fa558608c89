//! Distinguished names (RFC 4514) as tapd compares them: the directory's spelling of an entry's
//! DN, a group's `member` values and a DN written in the configuration or the TAP policy all
//! name the same entry when their normal forms are equal.
//!
//! Two comparisons: [`normalize_dn`] is the fast form a sync uses for every member value (no
//! syntax check); [`canonical_dn`] also checks that the text *is* a DN and puts the values of a
//! multi-valued RDN in one order, which is what a group reference needs to decide whether it
//! names a group by DN or by cn.
//!
//! Attribute types compare case-insensitively; values compare as the usual naming attributes'
//! matching rule does (`cn`, `ou`, `dc`, `o`, `l`, `st`, `c`, `uid` use caseIgnoreMatch): case
//! folded, escapes decoded, leading and trailing spaces dropped and inner runs of spaces
//! collapsed. An attribute written as an OID (`2.5.4.3=x`) is not equated with its name.
//!
//! Also the small DN helpers both directory sources (LDIF and LDAP) use: [`dc_domain`],
//! [`first_rdn_value`], [`strip_optional_uid`].
//!
//! May depend on: nothing but std.

/// Normalises a DN for comparison: lower case, no whitespace around the `,`, `=` and `+`
/// separators nor at either end, and one spelling for escaped characters. Hex escapes are
/// decoded (`\2C` and `\,` are the same comma; `\c3\bc` is `ü`): servers return their own
/// spelling of an entry's DN (OpenLDAP writes `uid=a\2Cb`) while member values keep whatever the
/// writer used (`uid=a\,b`). Characters that must stay escaped inside a value (`,` `+` `"` `\`
/// `<` `>` `;`) and escaped spaces come out as a backslash and the character; every other
/// escaped character comes out plain.
pub fn normalize_dn(dn: &str) -> String {
    // The usual spelling, printable ASCII with no escape and no space, only needs lower case:
    // a sync normalises every member value and every user DN, 200,000 of them at design size.
    if dn.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
        return dn.to_ascii_lowercase();
    }
    normalize_dn_in_full(dn)
}

/// [`normalize_dn`] for any spelling.
fn normalize_dn_in_full(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    // Length of `out` that trimming must not cut into (after an escape or separator).
    let mut protected = 0;
    let mut after_separator = true;
    // Hex-escaped octets not yet decoded (a UTF-8 character spans several `\xx`).
    let mut octets: Vec<u8> = Vec::new();
    let mut chars = dn.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let mut ahead = chars.clone();
            if let (Some(high), Some(low)) = (ahead.next(), ahead.next()) {
                if let (Some(high), Some(low)) = (high.to_digit(16), low.to_digit(16)) {
                    octets.push((high * 16 + low) as u8);
                    chars = ahead;
                    continue;
                }
            }
            flush_octets(&mut out, &mut octets);
            if let Some(escaped) = chars.next() {
                push_escaped(&mut out, escaped);
            }
            protected = out.len();
            after_separator = false;
            continue;
        }
        if !octets.is_empty() {
            flush_octets(&mut out, &mut octets);
            protected = out.len();
            after_separator = false;
        }
        match c {
            ',' | '=' | '+' => {
                trim_end_to(&mut out, protected);
                out.push(c);
                protected = out.len();
                after_separator = true;
            }
            c if c.is_whitespace() && after_separator => {}
            c => {
                after_separator = false;
                out.extend(c.to_lowercase());
            }
        }
    }
    flush_octets(&mut out, &mut octets);
    if out.ends_with("\\ ") {
        protected = out.len();
    }
    trim_end_to(&mut out, protected);
    out
}

/// Appends a character that was escaped in the input, in its one normal spelling.
fn push_escaped(out: &mut String, c: char) {
    match c {
        ',' | '+' | '"' | '\\' | '<' | '>' | ';' | ' ' => {
            out.push('\\');
            out.push(c);
        }
        c => out.extend(c.to_lowercase()),
    }
}

/// Decodes pending hex-escaped octets (invalid UTF-8 becomes U+FFFD) and appends them.
fn flush_octets(out: &mut String, octets: &mut Vec<u8>) {
    if octets.is_empty() {
        return;
    }
    for c in String::from_utf8_lossy(octets).chars() {
        push_escaped(out, c);
    }
    octets.clear();
}

/// Drops trailing whitespace from `out`, but never below `floor` bytes.
fn trim_end_to(out: &mut String, floor: usize) {
    while out.len() > floor && out.ends_with(char::is_whitespace) {
        out.pop();
    }
}

/// The canonical form of `text` when it is a distinguished name, `None` when it is not (then it
/// is a plain name, such as a group's cn). A DN is one or more RDNs separated by `,`, each one
/// or more `type=value` pairs separated by `+`, every type a name (`cn`, `ou`, `x-my-attr`) or
/// an OID (`2.5.4.3`); separators inside values must be escaped. Two DNs name the same entry
/// when their canonical forms are equal: [`normalize_dn`], inner runs of spaces collapsed, and
/// the pairs of a multi-valued RDN sorted (`cn=a+uid=b` is `uid=b+cn=a`).
pub fn canonical_dn(text: &str) -> Option<String> {
    if !is_dn(text) {
        return None;
    }
    let normal = normalize_dn(text);
    let rdns: Vec<String> = split_unescaped(&normal, ',')
        .into_iter()
        .map(|rdn| {
            let mut pairs: Vec<String> = split_unescaped(rdn, '+')
                .into_iter()
                .map(collapse_spaces)
                .collect();
            pairs.sort();
            pairs.join("+")
        })
        .collect();
    Some(rdns.join(","))
}

/// Whether `text` has the syntax of a DN (see [`canonical_dn`]).
fn is_dn(text: &str) -> bool {
    if text.trim().is_empty() {
        return false;
    }
    let mut pair = String::new();
    let mut chars = text.chars();
    let mut pairs_ok = true;
    let check = |pair: &str| {
        // Only the type matters: the value may hold anything (escaped where needed).
        match unescaped_position(pair, '=') {
            Some(at) => is_attribute_type(pair[..at].trim()),
            None => false,
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => {
                    pair.push('\\');
                    pair.push(escaped);
                }
                None => return false,
            },
            ',' | '+' => {
                pairs_ok &= check(&pair);
                pair.clear();
            }
            c => pair.push(c),
        }
    }
    pairs_ok && check(&pair)
}

/// A `descr` (letter, then letters, digits, hyphens) or a numeric OID.
fn is_attribute_type(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphabetic() => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
        }
        Some(first) if first.is_ascii_digit() => name
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())),
        _ => false,
    }
}

/// Byte offset of the first `separator` not escaped by a backslash.
fn unescaped_position(text: &str, separator: char) -> Option<usize> {
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            return Some(at);
        }
    }
    None
}

/// `text` cut at every `separator` not escaped by a backslash.
fn split_unescaped(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(at) = unescaped_position(rest, separator) {
        parts.push(&rest[..at]);
        rest = &rest[at + separator.len_utf8()..];
    }
    parts.push(rest);
    parts
}

/// Inner runs of unescaped spaces made one space (caseIgnoreMatch's insignificant spaces).
fn collapse_spaces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut escaped = false;
    let mut in_run = false;
    for c in text.chars() {
        if escaped {
            escaped = false;
            in_run = false;
            out.push(c);
            continue;
        }
        if c == '\\' {
            escaped = true;
            in_run = false;
            out.push(c);
            continue;
        }
        if c == ' ' {
            if !in_run {
                out.push(c);
            }
            in_run = true;
            continue;
        }
        in_run = false;
        out.push(c);
    }
    out
}

/// `example.org` from `uid=x,ou=people,dc=example,dc=org`: the `dc` values of the DN, joined
/// with dots (the UPN domain both directory sources derive from the base DN).
pub fn dc_domain(dn: &str) -> String {
    normalize_dn(dn)
        .split(',')
        .filter_map(|rdn| rdn.strip_prefix("dc="))
        .collect::<Vec<_>>()
        .join(".")
}

/// The value of the first RDN, unescaped only as far as trimming goes (a group's name when it
/// has no `cn`).
pub fn first_rdn_value(dn: &str) -> String {
    dn.split(',')
        .next()
        .and_then(|rdn| rdn.split_once('='))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_else(|| dn.to_owned())
}

/// `uniqueMember` is `nameAndOptionalUID`: a DN optionally followed by `#'0101'B`.
pub fn strip_optional_uid(value: &str) -> &str {
    match value.rfind('#') {
        Some(hash) if value[hash..].ends_with("'B") => &value[..hash],
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_separator_whitespace() {
        assert_eq!(
            normalize_dn(" UID = Alice , OU=People,  DC=Example , dc=org "),
            "uid=alice,ou=people,dc=example,dc=org"
        );
        assert_eq!(
            normalize_dn("cn=Smith\\, John ,dc=org"),
            "cn=smith\\, john,dc=org"
        );
        assert_eq!(
            normalize_dn("cn=trailing\\ ,dc=org"),
            "cn=trailing\\ ,dc=org"
        );
        assert_eq!(normalize_dn("cn=Two Words,dc=org"), "cn=two words,dc=org");
    }

    #[test]
    fn the_ascii_shortcut_agrees_with_the_full_normalisation() {
        let pieces = [
            "UID",
            "=",
            ",",
            "+",
            "\"",
            "#",
            ";",
            "<",
            "Ab",
            "ou=People",
            "DC=org",
        ];
        let mut checked = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let dn = format!("{a}{b}{c}");
                    assert_eq!(normalize_dn(&dn), normalize_dn_in_full(&dn), "{dn}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, pieces.len().pow(3));
        // Anything else takes the full path.
        assert_eq!(normalize_dn("uid=A b,dc=org"), "uid=a b,dc=org");
        assert_eq!(normalize_dn(r"uid=\41,dc=org"), "uid=a,dc=org");
        assert_eq!(normalize_dn("uid=ÄB,dc=org"), "uid=äb,dc=org");
    }

    #[test]
    fn hex_and_character_escapes_normalise_alike() {
        let plain = normalize_dn("uid=a\\,b,ou=people,dc=example,dc=org");
        assert_eq!(plain, "uid=a\\,b,ou=people,dc=example,dc=org");
        assert_eq!(
            normalize_dn("UID=a\\2Cb,ou=people,dc=example,dc=org"),
            plain
        );
        assert_eq!(
            normalize_dn("uid=a\\2cb, ou=People,dc=example,dc=org"),
            plain
        );
        // Multi-octet UTF-8 written as hex pairs.
        assert_eq!(
            normalize_dn("uid=J\\C3\\BCrgen,dc=org"),
            normalize_dn("uid=jürgen,dc=org")
        );
        // Escaped characters that need no escaping come out plain.
        assert_eq!(normalize_dn("uid=\\#x\\=y,dc=org"), "uid=#x=y,dc=org");
        assert_eq!(normalize_dn("uid=\\23x,dc=org"), "uid=#x,dc=org");
        assert_eq!(normalize_dn("cn=a\\2Bb\\5C,dc=org"), "cn=a\\+b\\\\,dc=org");
        // An escaped space at the end of a value survives, hex or not.
        assert_eq!(normalize_dn("cn=x\\20,dc=org"), "cn=x\\ ,dc=org");
        assert_eq!(normalize_dn("cn=x\\20"), "cn=x\\ ");
    }

    #[test]
    fn canonical_dns_compare_as_the_matching_rules_do() {
        let want = canonical_dn("cn=tap-admins,ou=groups,dc=example,dc=org");
        assert!(want.is_some());
        for same in [
            "CN=TAP-Admins,OU=Groups,DC=Example,DC=Org",
            " cn = tap-admins , ou=groups,dc=example,dc=org ",
            "cn=tap\\2dadmins,ou=groups,dc=example,dc=org",
            "cn=tap\\-admins,ou=groups,dc=example,dc=org",
        ] {
            assert_eq!(canonical_dn(same), want, "{same}");
        }
        assert_eq!(
            canonical_dn("cn=Two   Words,dc=org"),
            canonical_dn("cn=two words,dc=org")
        );
        // Multi-valued RDNs in any order.
        assert_eq!(
            canonical_dn("uid=erin+cn=Erin Example,ou=people,dc=org"),
            canonical_dn("CN=erin example+UID=ERIN,ou=people,dc=org")
        );
        // Different entries stay different.
        for other in [
            "cn=tap-admins,ou=people,dc=example,dc=org",
            "cn=tap-admins,dc=example,dc=org",
            "cn=tap-admins\\,ou=groups,dc=example,dc=org",
            "ou=tap-admins,ou=groups,dc=example,dc=org",
        ] {
            assert_ne!(canonical_dn(other), want, "{other}");
        }
    }

    #[test]
    fn only_dn_syntax_is_a_dn() {
        for name in [
            "tap-admins",
            "Domain Admins",
            "",
            "  ",
            "=x",
            "cn=a,",
            "cn=a,,dc=org",
            "cn=a,dc",
            "9cn=x",
            "c n=x",
            "cn=a\\",
            "a,b",
        ] {
            assert_eq!(canonical_dn(name), None, "{name:?}");
        }
        for dn in [
            "cn=a",
            "cn=",
            "2.5.4.3=a,dc=org",
            "x-attr=a+cn=b,dc=org",
            "cn=a\\,b,dc=org",
            "cn=a=b,dc=org",
        ] {
            assert!(canonical_dn(dn).is_some(), "{dn:?}");
        }
    }

    #[test]
    fn a_dn_written_as_a_cn_value_is_not_that_dn() {
        // A group whose cn is the text of an admin group's DN has its own, longer DN.
        let admin = canonical_dn("cn=tap-global-admins,ou=groups,dc=example,dc=org");
        let spoof = format!(
            "cn={},ou=people,dc=example,dc=org",
            crate::directory::ldap::escape::escape_dn_value(
                "cn=tap-global-admins,ou=groups,dc=example,dc=org"
            )
        );
        assert!(canonical_dn(&spoof).is_some());
        assert_ne!(canonical_dn(&spoof), admin);
    }
}
