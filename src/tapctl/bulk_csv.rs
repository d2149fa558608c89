//! The CSV of `tapctl tap bulk`: a header row naming the columns (`user` required; `start`,
//! `lifetime`, `one_time`, `recipient` optional, in any order), then one row per user. Fields
//! may be quoted (`"…"`, a doubled `""` inside); blank lines are skipped. Each row keeps the
//! line it starts on, for the daemon's messages. The values are checked by the daemon.

use crate::service::BulkRow;

/// The columns a list may have.
const COLUMNS: &[&str] = &["user", "start", "lifetime", "one_time", "recipient"];

/// Splits `text` into rows; an error names the line and the problem with the file's shape.
pub fn parse(text: &str) -> Result<Vec<BulkRow>, String> {
    let records = records(text)?;
    let mut records = records
        .into_iter()
        .filter(|(_, fields)| !(fields.len() == 1 && fields[0].trim().is_empty()));
    let Some((header_line, header)) = records.next() else {
        return Err(
            "the file is empty: it needs a header row (user,start,lifetime,one_time,recipient)"
                .to_owned(),
        );
    };
    let mut index = Vec::with_capacity(header.len());
    for name in &header {
        let name = name
            .trim()
            .trim_start_matches('\u{feff}')
            .to_ascii_lowercase();
        if !COLUMNS.contains(&name.as_str()) {
            return Err(format!(
                "line {header_line}: unknown column {name:?} (the columns are {})",
                COLUMNS.join(", ")
            ));
        }
        if index.contains(&name) {
            return Err(format!("line {header_line}: column {name:?} appears twice"));
        }
        index.push(name);
    }
    if !index.iter().any(|c| c == "user") {
        return Err(format!(
            "line {header_line}: the header has no \"user\" column (is the header row missing?)"
        ));
    }
    let mut rows = Vec::new();
    for (line, fields) in records {
        if fields.len() != index.len() {
            return Err(format!(
                "line {line}: {} field(s), but the header names {} column(s)",
                fields.len(),
                index.len()
            ));
        }
        let mut row = BulkRow {
            line,
            ..BulkRow::default()
        };
        for (name, value) in index.iter().zip(fields) {
            let value = value.trim().to_owned();
            match name.as_str() {
                "user" => row.user = value,
                "start" => row.start = value,
                "lifetime" => row.lifetime = value,
                "one_time" => row.one_time = value,
                _ => row.recipient = value,
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The records of `text`, each with the line it starts on.
fn records(text: &str) -> Result<Vec<(u32, Vec<String>)>, String> {
    let mut out = Vec::new();
    let mut line: u32 = 1;
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut at_field_start = true;
        loop {
            let Some(c) = chars.next() else {
                if quoted {
                    return Err(format!("line {start}: a quoted field is not closed"));
                }
                break;
            };
            if quoted {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => quoted = false,
                    '\n' => {
                        line += 1;
                        field.push(c);
                    }
                    _ => field.push(c),
                }
                continue;
            }
            match c {
                '"' if at_field_start => {
                    quoted = true;
                    at_field_start = false;
                }
                ',' => {
                    fields.push(std::mem::take(&mut field));
                    at_field_start = true;
                }
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' => {
                    line += 1;
                    break;
                }
                _ => {
                    if !(at_field_start && c == ' ') {
                        at_field_start = false;
                    }
                    field.push(c);
                }
            }
        }
        fields.push(field);
        out.push((start, fields));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn rows_keep_their_lines_and_quoted_fields() {
        let text = "user,recipient,one_time\r\nann,boss@example.org,yes\n\n\"lee, bo\",\"a\"\"b@example.org\",\nzed,,no\n";
        let rows = parse(text).unwrap();
        let got: Vec<(u32, &str, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.line,
                    r.user.as_str(),
                    r.recipient.as_str(),
                    r.one_time.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (2, "ann", "boss@example.org", "yes"),
                (4, "lee, bo", "a\"b@example.org", ""),
                (5, "zed", "", "no"),
            ]
        );
    }

    #[test]
    fn a_bad_shape_is_named_with_its_line() {
        for (text, problem) in [
            ("", "header row"),
            ("ann,boss@example.org\n", "unknown column \"ann\""),
            (
                "start,recipient\n2026-01-01T00:00:00Z,x@y.org\n",
                "no \"user\" column",
            ),
            ("user,user\n", "appears twice"),
            ("user,recipient\nann\n", "line 2: 1 field(s)"),
            ("user\n\"ann\n", "line 2: a quoted field is not closed"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(problem), "{text:?}: {err}");
        }
    }
}
