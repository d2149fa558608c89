//! The parts of a user entry onboarding rules need beyond the sign-in names: the `manager`
//! DN, normalised so that the store can match it exactly against synced users' DNs, and the
//! dates in the attributes rules match on (`employeeHireDate`). Shared by the LDAP and LDIF
//! sources so that both read them the same way.
//!
//! A date value is GeneralizedTime (`YYYYMMDDHHMMSSZ`, optionally with fractional seconds or
//! minutes only, as RFC 4517 allows; the day as written, which is UTC) or an ISO date
//! (`YYYY-MM-DD`). A value that is neither is logged once per entry, attribute and value, and
//! left out: the user then does not match that rule's date.
//!
//! May depend on: `dn`, `model`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use chrono::NaiveDate;

use crate::dn::normalize_dn;

/// The normalised DN of a `manager` value; `None` for an empty one.
pub fn manager_dn(value: Option<&str>) -> Option<String> {
    let value = value?.trim();
    (!value.is_empty()).then(|| normalize_dn(value))
}

/// The day of a directory date value; `None` when it is neither GeneralizedTime nor
/// `YYYY-MM-DD`, or names no real day.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    let text = text.trim();
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        // `%Y` also takes a sign and more digits; only the ten-character form is meant.
        return (text.len() == 10).then_some(date);
    }
    // GeneralizedTime: YYYYMMDDHH[MM[SS]][(.|,)fraction](Z|±HHMM). The day is the one
    // written; only UTC (`Z`) is accepted, as Active Directory and OpenLDAP write it.
    let body = text.strip_suffix('Z')?;
    let (whole, fraction) = match body.find(['.', ',']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    if !whole.bytes().all(|b| b.is_ascii_digit()) || ![10, 12, 14].contains(&whole.len()) {
        return None;
    }
    if let Some(fraction) = fraction {
        if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let number = |range: std::ops::Range<usize>| whole.get(range)?.parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(number(0..4)?).ok()?,
        number(4..6)?,
        number(6..8)?,
    )?;
    let hour = number(8..10)?;
    let minute = if whole.len() >= 12 {
        number(10..12)?
    } else {
        0
    };
    let second = if whole.len() == 14 {
        number(12..14)?
    } else {
        0
    };
    // 60 is a leap second.
    (hour < 24 && minute < 60 && second <= 60).then_some(date)
}

/// Reads the configured date attributes of entries, warning once about each value that
/// does not parse.
#[derive(Debug, Default)]
pub struct DateReader {
    /// Attribute names as configured (matched case-insensitively), keyed in lower case.
    attributes: Vec<String>,
    /// `dn \0 attribute \0 value` of every bad value already warned about.
    warned: Mutex<HashSet<String>>,
}

impl DateReader {
    /// A reader of `attributes` (any case).
    pub fn new(attributes: &[String]) -> Self {
        let mut names: Vec<String> = attributes.iter().map(|a| a.to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        DateReader {
            attributes: names,
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// The attribute names to request.
    pub fn attributes(&self) -> &[String] {
        &self.attributes
    }

    /// The dates of the entry at `dn`; `first_value` gives an attribute's first value as
    /// text (or `None`).
    pub fn read(
        &self,
        dn: &str,
        mut first_value: impl FnMut(&str) -> Option<String>,
    ) -> BTreeMap<String, NaiveDate> {
        let mut dates = BTreeMap::new();
        for attribute in &self.attributes {
            let Some(value) = first_value(attribute) else {
                continue;
            };
            match parse_date(&value) {
                Some(date) => {
                    dates.insert(attribute.clone(), date);
                }
                None => {
                    let key = format!("{dn}\0{attribute}\0{value}");
                    let first = self
                        .warned
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key);
                    if first {
                        log::warn!(
                            "directory user {dn}: {attribute} {value:?} is not a date \
                             (YYYYMMDDHHMMSSZ or YYYY-MM-DD); onboarding rules ignore it"
                        );
                    }
                }
            }
        }
        dates
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(y, m, d)
    }

    #[test]
    fn generalized_time_and_iso_dates_parse() {
        assert_eq!(parse_date("20261209080000Z"), day(2026, 12, 9));
        assert_eq!(parse_date(" 20261209000000Z "), day(2026, 12, 9));
        assert_eq!(parse_date("20261209235959.5Z"), day(2026, 12, 9));
        assert_eq!(parse_date("202612092359Z"), day(2026, 12, 9));
        assert_eq!(parse_date("2026120923Z"), day(2026, 12, 9));
        assert_eq!(parse_date("2026-12-09"), day(2026, 12, 9));
        assert_eq!(parse_date("20240229000000Z"), day(2024, 2, 29));
    }

    #[test]
    fn other_values_are_not_dates() {
        for bad in [
            "",
            "tomorrow",
            "20261209080000",      // no zone
            "20261209080000+0100", // not UTC
            "20261309080000Z",     // month 13
            "20230229000000Z",     // not a leap year
            "20261209250000Z",     // hour 25
            "2026120908000Z",      // odd length
            "20261209080000.Z",    // empty fraction
            "2026-1-9",
            "+2026-12-09",
            "12/09/2026",
            "2026-12-09T08:00:00Z",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn manager_dns_are_normalised() {
        assert_eq!(
            manager_dn(Some(" UID=Boss, OU=People,DC=example,DC=org ")).as_deref(),
            Some("uid=boss,ou=people,dc=example,dc=org")
        );
        assert_eq!(manager_dn(Some("  ")), None);
        assert_eq!(manager_dn(None), None);
    }

    #[test]
    fn reader_keeps_parsable_dates_under_lower_case_names() {
        let reader =
            DateReader::new(&["employeeHireDate".to_owned(), "EMPLOYEEHIREDATE".to_owned()]);
        assert_eq!(reader.attributes(), ["employeehiredate"]);
        let dates = reader.read("uid=a", |name| {
            (name == "employeehiredate").then(|| "20261209000000Z".to_owned())
        });
        assert_eq!(dates.get("employeehiredate").copied(), day(2026, 12, 9));
        let none = reader.read("uid=b", |_| Some("soon".to_owned()));
        assert!(none.is_empty());
    }
}
