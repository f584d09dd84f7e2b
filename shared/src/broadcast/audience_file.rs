//! An uploaded audience: a CSV file the tenant puts in S3 through a presigned link
//! (`POST /v1/broadcasts/uploads`), named by `audience.upload_id` when the broadcast is
//! created. Its header names the columns: `phone` (E.164) or `contact_id` identifies each row's
//! contact, every other column is a per-recipient value a parameter may map (`csv.<column>`).
//!
//! The file is checked whole when the broadcast is created (a bad row is a `400` naming its
//! line, before anything is stored), then kept as one JSON line per row under the broadcast's
//! own key, so the engine reads it a page at a time by byte range (never whole) and deletes
//! it once the audience is planned.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::spec::SpecError;
use crate::contact::normalize_phone;

/// Largest upload accepted (100,000 rows of a phone and a few values fit in it).
pub const MAX_UPLOAD_BYTES: u64 = 10 * 1024 * 1024;
pub const MAX_ROWS: usize = 100_000;
pub const MAX_COLUMNS: usize = 20;
const MAX_VALUE_CHARS: usize = 1024;
/// Line errors reported at once.
const MAX_REPORTED: usize = 5;

/// What the broadcast keeps about its file (the rows themselves are in S3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSummary {
    pub rows: u64,
    /// The value columns (`phone` / `contact_id` not among them).
    pub columns: Vec<String>,
}

/// One row: who, and the values of the other columns (empty cells left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    #[serde(rename = "v", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
}

/// A checked upload: its summary and its rows as JSON lines (what the engine reads).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFile {
    pub summary: FileSummary,
    pub lines: Vec<u8>,
}

fn invalid(message: impl Into<String>) -> SpecError {
    SpecError {
        code: "invalid_audience",
        message: message.into(),
    }
}

fn column_name(raw: &str) -> Option<String> {
    let name = raw.trim().to_ascii_lowercase();
    (!name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then_some(name)
}

/// Checks an uploaded CSV (UTF-8, optional BOM, `,` or `;` separated, quoted cells allowed).
pub fn parse_upload(data: &[u8]) -> Result<ParsedFile, SpecError> {
    if data.len() as u64 > MAX_UPLOAD_BYTES {
        return Err(invalid(format!("the file is over {MAX_UPLOAD_BYTES} bytes")));
    }
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    if std::str::from_utf8(data).is_err() {
        return Err(invalid("the file is not UTF-8 text"));
    }
    let first_line = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let delimiter = if first_line.contains(&b';') && !first_line.contains(&b',') {
        b';'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(data);
    let header = reader.headers().map_err(|e| invalid(format!("line 1: {e}")))?.clone();
    let names: Vec<String> = header
        .iter()
        .map(|h| {
            column_name(h).ok_or_else(|| {
                invalid(format!(
                    "line 1: column {h:?} is not a column name (letters, digits, _ and -, at most 64)"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let at = |name: &str| names.iter().position(|n| n == name);
    let (phone_at, id_at) = (at("phone"), at("contact_id"));
    if phone_at.is_none() && id_at.is_none() {
        return Err(invalid("line 1: the header needs a phone or a contact_id column"));
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != names.len() {
        return Err(invalid("line 1: a column name appears twice"));
    }
    let columns: Vec<String> = names
        .iter()
        .filter(|n| *n != "phone" && *n != "contact_id")
        .cloned()
        .collect();
    if columns.len() > MAX_COLUMNS {
        return Err(invalid(format!("at most {MAX_COLUMNS} value columns")));
    }
    let mut lines = Vec::with_capacity(data.len());
    let mut errors = Vec::new();
    let mut rows = 0usize;
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("line {line}: {e}"));
                if errors.len() == MAX_REPORTED {
                    break;
                }
                continue;
            }
        };
        if record.iter().all(str::is_empty) {
            continue;
        }
        rows += 1;
        if rows > MAX_ROWS {
            return Err(invalid(format!("at most {MAX_ROWS} rows")));
        }
        let cell = |at: Option<usize>| at.and_then(|i| record.get(i)).filter(|v| !v.is_empty());
        let phone = match cell(phone_at).map(normalize_phone) {
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => {
                errors.push(format!("line {line}: the phone is not an E.164 number"));
                None
            }
            None => None,
        };
        let contact_id = cell(id_at).map(str::to_owned);
        if contact_id.as_deref().is_some_and(|id| !crate::ids::is_valid_id(id)) {
            errors.push(format!("line {line}: contact_id is not a contact id"));
        } else if phone.is_none()
            && contact_id.is_none()
            && !errors.last().is_some_and(|e| e.starts_with(&format!("line {line}:")))
        {
            errors.push(format!("line {line}: no phone and no contact_id"));
        }
        let mut values = BTreeMap::new();
        for (name, value) in names.iter().zip(record.iter()) {
            if name == "phone" || name == "contact_id" || value.is_empty() {
                continue;
            }
            if value.chars().count() > MAX_VALUE_CHARS {
                errors.push(format!("line {line}: {name} is over {MAX_VALUE_CHARS} characters"));
            }
            values.insert(name.clone(), value.to_owned());
        }
        if errors.len() >= MAX_REPORTED {
            break;
        }
        let row = Row {
            phone,
            contact_id,
            values,
        };
        serde_json::to_writer(&mut lines, &row).expect("rows serialize");
        lines.push(b'\n');
    }
    if !errors.is_empty() {
        return Err(invalid(format!("the file has bad rows: {}", errors.join("; "))));
    }
    if rows == 0 {
        return Err(invalid("the file has no rows"));
    }
    Ok(ParsedFile {
        summary: FileSummary {
            rows: rows as u64,
            columns,
        },
        lines,
    })
}

/// The complete rows at the start of `chunk` (a byte range of the JSON lines), at most `max`,
/// and how many bytes they take: the next read starts there.
pub fn rows_in(chunk: &[u8], max: usize) -> (Vec<Row>, usize) {
    let mut rows = Vec::new();
    let mut used = 0;
    for line in chunk.split_inclusive(|b| *b == b'\n') {
        if rows.len() == max || !line.ends_with(b"\n") {
            break;
        }
        used += line.len();
        // Lines are ours (written by `parse_upload`); one that does not parse is skipped.
        if let Ok(row) = serde_json::from_slice::<Row>(line) {
            rows.push(row);
        }
    }
    (rows, used)
}

/// Bytes read per page of `rows`: enough for most files' rows, re-read from the first
/// incomplete one otherwise.
pub fn chunk_bytes(rows: usize) -> u64 {
    (rows as u64 * 1024).max(256 * 1024)
}

/// Where an upload waits (the exports bucket), until a broadcast takes it or a day passes.
pub fn upload_key(tenant_id: &str, upload_id: &str) -> String {
    format!("tenants/{tenant_id}/broadcast-uploads/{upload_id}.csv")
}

/// The broadcast's own objects (its audience file), in the exports bucket.
pub fn broadcast_prefix(tenant_id: &str, broadcast_id: &str) -> String {
    format!("tenants/{tenant_id}/broadcasts/{broadcast_id}/")
}

pub fn audience_key(tenant_id: &str, broadcast_id: &str) -> String {
    format!("{}audience.jsonl", broadcast_prefix(tenant_id, broadcast_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_checked_whole_and_kept_as_lines() {
        let id = crate::ids::new_id();
        let csv = format!(
            "\u{feff}Phone,contact_id,order,first_name\n+44 7911 123401,,A-1,Ana\n,{id},B-2,\n\"+447911123403\",,\"C,3\",Bo\n\n"
        );
        let parsed = parse_upload(csv.as_bytes()).unwrap();
        assert_eq!(parsed.summary.rows, 3);
        assert_eq!(parsed.summary.columns, vec!["order", "first_name"]);
        let (rows, used) = rows_in(&parsed.lines, 10);
        assert_eq!(used, parsed.lines.len());
        assert_eq!(rows[0].phone.as_deref(), Some("+447911123401"));
        assert_eq!(rows[0].values["order"], "A-1");
        assert_eq!(rows[1].contact_id.as_deref(), Some(id.as_str()));
        assert!(!rows[1].values.contains_key("first_name"), "empty cells are left out");
        assert_eq!(rows[2].values["order"], "C,3");
        // A page stops at `max` rows and at an incomplete line.
        let (two, used) = rows_in(&parsed.lines, 2);
        assert_eq!(two.len(), 2);
        let (rest, _) = rows_in(&parsed.lines[used..], 10);
        assert_eq!(rest, rows[2..].to_vec());
        let (none, used) = rows_in(&parsed.lines[..used - 1], 10);
        assert_eq!(
            (none.len(), used),
            (1, parsed.lines.iter().position(|b| *b == b'\n').unwrap() + 1)
        );
        // Semicolons (a spreadsheet's export in many locales) work too.
        let semi = parse_upload(b"phone;code\n+447911123401;X\n").unwrap();
        assert_eq!(semi.summary.columns, vec!["code"]);
    }

    #[test]
    fn bad_files_name_their_lines() {
        let err = |csv: &str| parse_upload(csv.as_bytes()).unwrap_err().message;
        assert!(err("name,code\nAna,1\n").contains("phone or a contact_id"));
        assert!(err("phone,code\n12,1\n+447911123401,2\nxyz,3\n").contains("line 2"));
        assert!(err("phone,code\n12,1\n+447911123401,2\nxyz,3\n").contains("line 4"));
        assert!(err("phone,code\n+447911123401,1,extra\n").contains("line 2"));
        assert!(err("phone,phone\n+447911123401,+447911123402\n").contains("twice"));
        assert!(err("phone\n").contains("no rows"));
        assert!(err("phone,\"a b!\"\n+447911123401,1\n").contains("column"));
        assert!(err("contact_id\nnot-an-id\n").contains("contact id"));
        assert!(parse_upload(&[0xff, 0xfe, 0x00]).unwrap_err().message.contains("UTF-8"));
    }
}
