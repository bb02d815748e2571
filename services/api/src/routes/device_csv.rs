//! CSV bodies of `devices:import` (`Content-Type: text/csv`, RFC 4180):
//! a header row, then one device per row.
//!
//! Columns: `id` (required); `enabled` (`true`, `false`, or empty for the
//! default, true); `attributes` (a JSON object, or empty); and one
//! `label.KEY` column per label key (an empty cell sets no label). Any other
//! column, or one given twice, refuses the whole body: a column silently
//! ignored would import the wrong devices.
//!
//! Each row becomes the JSON object an NDJSON line would be and goes
//! through the same `CreateDevice` parsing and validation, so both formats
//! accept the same devices and report the same field errors.

use serde_json::{Map, Value};
use store::NewDevice;

use super::device_import::{MAX_LINES, ParsedLines};
use super::devices::{CreateDevice, new_device};
use crate::{ApiError, ApiJson, FieldError};

/// What one header cell names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Id,
    Enabled,
    Attributes,
    Label(String),
}

impl Column {
    fn parse(name: &str) -> Option<Column> {
        match name {
            "id" => Some(Column::Id),
            "enabled" => Some(Column::Enabled),
            "attributes" => Some(Column::Attributes),
            _ => name
                .strip_prefix("label.")
                .filter(|key| !key.is_empty())
                .map(|key| Column::Label(key.to_owned())),
        }
    }
}

/// Every data row of `body` with its 1-based line number, as a device or
/// what is wrong with it. A malformed header fails the whole request.
pub(crate) fn rows(body: &[u8]) -> Result<ParsedLines, ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::Headers)
        .from_reader(body);
    let header = reader
        .headers()
        .map_err(|e| ApiError::BadRequest(format!("CSV header row: {}", describe(&e))))?
        .clone();
    let mut columns = Vec::with_capacity(header.len());
    for name in &header {
        let column = Column::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown CSV column `{}`; expected id, enabled, attributes and label.KEY",
                name.chars().take(64).collect::<String>()
            ))
        })?;
        if columns.contains(&column) {
            return Err(ApiError::BadRequest(format!(
                "CSV column `{}` given twice",
                name.chars().take(64).collect::<String>()
            )));
        }
        columns.push(column);
    }
    if !columns.contains(&Column::Id) {
        return Err(ApiError::BadRequest(
            "the CSV header row has no `id` column".to_owned(),
        ));
    }

    let mut out = Vec::new();
    for record in reader.records() {
        if out.len() == MAX_LINES {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_LINES} rows per import"
            )));
        }
        let (line, device) = match record {
            Ok(record) => {
                let line = record.position().map_or(0, |p| line_of(body, p));
                (line, device(&columns, &record))
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| line_of(body, p));
                (line, Err(ApiError::BadRequest(describe(&e))))
            }
        };
        out.push((line, device));
    }
    Ok(out)
}

/// The 1-based line a record starts on. Counted from the byte offset, since
/// after a `\r\n` the reader's own line count is one behind (the `\n` is
/// read as the start of the next record).
fn line_of(body: &[u8], p: &csv::Position) -> usize {
    let start = usize::try_from(p.byte()).unwrap_or(usize::MAX);
    let before = body.get(..start).unwrap_or(body);
    let rest = body.get(start..).unwrap_or_default();
    let terminators = rest
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .filter(|b| **b == b'\n')
        .count();
    before.iter().filter(|b| **b == b'\n').count() + terminators + 1
}

/// The row as a `CreateDevice` JSON object, then parsed and validated as one.
fn device(columns: &[Column], record: &csv::StringRecord) -> Result<NewDevice, ApiError> {
    let mut object = Map::new();
    let mut labels = Map::new();
    for (column, cell) in columns.iter().zip(record.iter()) {
        match column {
            Column::Id => {
                object.insert("id".to_owned(), Value::String(cell.to_owned()));
            }
            Column::Enabled => match cell.trim() {
                "" => {}
                "true" => {
                    object.insert("enabled".to_owned(), Value::Bool(true));
                }
                "false" => {
                    object.insert("enabled".to_owned(), Value::Bool(false));
                }
                _ => {
                    return Err(ApiError::invalid_field(
                        "/enabled",
                        "must be true, false or empty",
                    ));
                }
            },
            Column::Attributes if cell.trim().is_empty() => {}
            Column::Attributes => match serde_json::from_str::<Value>(cell) {
                Ok(value @ Value::Object(_)) => {
                    object.insert("attributes".to_owned(), value);
                }
                _ => {
                    return Err(ApiError::Validation(vec![FieldError::new(
                        "/attributes",
                        "must be a JSON object (or empty)",
                    )]));
                }
            },
            Column::Label(_) if cell.is_empty() => {}
            Column::Label(key) => {
                labels.insert(key.clone(), Value::String(cell.to_owned()));
            }
        }
    }
    if !labels.is_empty() {
        object.insert("labels".to_owned(), Value::Object(labels));
    }
    let json = serde_json::to_vec(&Value::Object(object)).map_err(ApiError::internal)?;
    let ApiJson(body) = ApiJson::<CreateDevice>::from_bytes(&json)?;
    new_device(body).map_err(ApiError::Validation)
}

/// A CSV error without the crate's byte offsets.
fn describe(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header row has {expected_len}"),
        _ => "malformed CSV".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Vec<(usize, Result<NewDevice, ApiError>)> {
        rows(body.as_bytes()).unwrap()
    }

    #[test]
    fn rows_become_devices() {
        let parsed = ok("id,enabled,label.site,label.rack,attributes\n\
             s-1,,berlin,,\n\
             s-2,false,,r7,\"{\"\"fw\"\": \"\"1.2\"\"}\"\n");
        let (line, first) = &parsed[0];
        assert_eq!(*line, 2);
        let first = first.as_ref().unwrap();
        assert_eq!(first.id, "s-1");
        assert!(first.enabled);
        assert_eq!(first.labels.get("site").map(String::as_str), Some("berlin"));
        assert!(!first.labels.contains_key("rack"));
        let (line, second) = &parsed[1];
        assert_eq!(*line, 3);
        let second = second.as_ref().unwrap();
        assert!(!second.enabled);
        assert_eq!(second.labels.get("rack").map(String::as_str), Some("r7"));
        assert_eq!(second.attributes["fw"], "1.2");
    }

    #[test]
    fn bad_rows_fail_alone_with_pointers() {
        let parsed = ok("id,enabled,attributes\nok-1,,\nbad id,,\nok-2,maybe,\nok-3,,[1]\nx,y\n");
        assert!(parsed[0].1.is_ok());
        let pointer = |i: usize| match &parsed[i].1 {
            Err(ApiError::Validation(errors)) => errors[0].pointer.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(pointer(1), "/id");
        assert_eq!(pointer(2), "/enabled");
        assert_eq!(pointer(3), "/attributes");
        assert_eq!(parsed[4].0, 6);
        assert!(
            matches!(&parsed[4].1, Err(ApiError::BadRequest(m)) if m.contains("2 fields")),
            "{:?}",
            parsed[4].1
        );
    }

    #[test]
    fn crlf_rows_keep_their_line_numbers() {
        let lines: Vec<usize> = ok("id\r\na\r\n\r\nb\r\nc")
            .iter()
            .map(|(line, _)| *line)
            .collect();
        assert_eq!(lines, [2, 4, 5]);
    }

    #[test]
    fn quoted_cells_may_span_lines() {
        let parsed = ok("id,label.note\n\"a\",\"two\nlines\"\nb,\n");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].0, 4);
        // A label value with a newline is a control character: refused.
        assert!(parsed[0].1.is_err());
        assert!(parsed[1].1.is_ok());
    }

    #[test]
    fn header_problems_refuse_the_body() {
        for body in [
            "name\nx\n",
            "id,colour\nx,red\n",
            "id,id\nx,y\n",
            "id,label.\nx,y\n",
            "enabled\ntrue\n",
        ] {
            assert!(
                matches!(rows(body.as_bytes()), Err(ApiError::BadRequest(_))),
                "{body:?}"
            );
        }
        assert!(ok("id\n").is_empty());
        assert!(rows(b"").is_err());
    }
}
