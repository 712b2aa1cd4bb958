//! Answers as JSON, NDJSON or CSV.
//!
//! Values: integers and finite floats are JSON numbers; NaN and infinities are the strings
//! `"NaN"`, `"Infinity"`, `"-Infinity"` (JSON has no such numbers); timestamps are RFC 3339
//! strings in UTC with the column's precision (`2026-11-26T10:00:00.000Z` for milliseconds);
//! dates are `YYYY-MM-DD`; `json` columns (document `data`, relational `json` columns, document
//! fields of mixed types) are embedded as JSON values, never as strings holding JSON; lists
//! are arrays and structs objects; any other type is its text form. CSV cells are the same
//! values as text (JSON columns as their JSON text, NULL as an empty cell), quoted per RFC 4180.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Value};

use crate::Answer;
use crate::tables::TYPE_KEY;

/// The answer formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object: columns, rows (objects), row count, token.
    Json,
    /// One JSON object per row per line.
    Ndjson,
    /// A header line and one line per row.
    Csv,
}

impl Format {
    /// The format an `Accept` header asks for (JSON unless it names NDJSON or CSV).
    pub fn from_accept(accept: &str) -> Format {
        let accept = accept.to_ascii_lowercase();
        if accept.contains("ndjson") || accept.contains("jsonl") {
            Format::Ndjson
        } else if accept.contains("text/csv") {
            Format::Csv
        } else {
            Format::Json
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8; header=present",
        }
    }
}

fn is_json(field: &Field) -> bool {
    field.metadata().get(TYPE_KEY).map(String::as_str) == Some("json")
}

/// The type name an answer's `columns` show.
pub fn type_name(field: &Field) -> String {
    match field.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if is_json(field) => {
            "json".into()
        }
        DataType::Boolean => "bool".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Timestamp(..) => "timestamp".into(),
        other => other.to_string().to_ascii_lowercase(),
    }
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// RFC 3339 in UTC of `value` units of `1 / per_second` seconds since the epoch, with
/// `digits` fraction digits.
pub fn rfc3339(value: i64, per_second: i64, digits: usize) -> String {
    let seconds = value.div_euclid(per_second);
    let fraction = value.rem_euclid(per_second);
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    if digits > 0 {
        out.push_str(&format!(".{fraction:0digits$}"));
    }
    out.push('Z');
    out
}

fn float(f: f64) -> Value {
    if f.is_nan() {
        Value::from("NaN")
    } else if f.is_infinite() {
        Value::from(if f > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

fn text(array: &dyn Array, row: usize) -> Option<&str> {
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Some(array.as_string_view().value(row)),
        _ => None,
    }
}

/// The JSON value of `array[row]`; `json` says that a text column holds JSON.
pub fn cell(array: &dyn Array, row: usize, json: bool) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    if let Some(s) = text(array, row) {
        return if json {
            serde_json::from_str(s).unwrap_or_else(|_| Value::from(s))
        } else {
            Value::from(s)
        };
    }
    match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::from(array.as_boolean().value(row)),
        DataType::Int8 => Value::from(array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => Value::from(array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Value::from(array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => Value::from(array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => Value::from(array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => Value::from(array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Timestamp(unit, _) => Value::from(match unit {
            TimeUnit::Second => {
                rfc3339(array.as_primitive::<TimestampSecondType>().value(row), 1, 0)
            }
            TimeUnit::Millisecond => rfc3339(
                array.as_primitive::<TimestampMillisecondType>().value(row),
                1000,
                3,
            ),
            TimeUnit::Microsecond => rfc3339(
                array.as_primitive::<TimestampMicrosecondType>().value(row),
                1_000_000,
                6,
            ),
            TimeUnit::Nanosecond => rfc3339(
                array.as_primitive::<TimestampNanosecondType>().value(row),
                1_000_000_000,
                9,
            ),
        }),
        DataType::Date32 => {
            let (y, m, d) =
                civil_from_days(i64::from(array.as_primitive::<Date32Type>().value(row)));
            Value::from(format!("{y:04}-{m:02}-{d:02}"))
        }
        DataType::List(_) => list(&array.as_list::<i32>().value(row)),
        DataType::LargeList(_) => list(&array.as_list::<i64>().value(row)),
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut object = Map::new();
            for (i, f) in fields.iter().enumerate() {
                object.insert(
                    f.name().clone(),
                    cell(s.column(i).as_ref(), row, is_json(f)),
                );
            }
            Value::Object(object)
        }
        _ => formatted(array, row),
    }
}

fn list(values: &dyn Array) -> Value {
    Value::Array((0..values.len()).map(|i| cell(values, i, false)).collect())
}

fn formatted(array: &dyn Array, row: usize) -> Value {
    match ArrayFormatter::try_new(array, &FormatOptions::default()) {
        Ok(f) => Value::from(f.value(row).to_string()),
        Err(e) => Value::from(format!("<{e}>")),
    }
}

/// Writes each row as a JSON object with its keys in column order (a map would sort them).
fn write_rows(answer: &Answer, out: &mut Vec<u8>, separator: &[u8]) {
    let names: Vec<String> = answer
        .schema
        .fields()
        .iter()
        .map(|f| serde_json::to_string(f.name()).expect("strings serialize"))
        .collect();
    let json: Vec<bool> = answer.schema.fields().iter().map(|f| is_json(f)).collect();
    let mut first = true;
    for batch in &answer.batches {
        for row in 0..batch.num_rows() {
            if !first {
                out.extend_from_slice(separator);
            }
            first = false;
            out.push(b'{');
            for (i, column) in batch.columns().iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(names[i].as_bytes());
                out.push(b':');
                serde_json::to_writer(&mut *out, &cell(column.as_ref(), row, json[i]))
                    .expect("JSON values serialize");
            }
            out.push(b'}');
        }
    }
}

/// The answer in `format`.
pub fn encode(answer: &Answer, format: Format) -> Vec<u8> {
    match format {
        Format::Json => {
            let columns: Vec<Value> = answer
                .schema
                .fields()
                .iter()
                .map(|f| serde_json::json!({"name": f.name(), "type": type_name(f)}))
                .collect();
            let mut out = b"{\"columns\":".to_vec();
            serde_json::to_writer(&mut out, &columns).expect("JSON values serialize");
            out.extend_from_slice(
                format!(",\"row_count\":{},\"rows\":[", answer.rows()).as_bytes(),
            );
            write_rows(answer, &mut out, b",");
            out.push(b']');
            if answer.truncated {
                out.extend_from_slice(b",\"truncated\":true");
            }
            out.extend_from_slice(b",\"token\":");
            serde_json::to_writer(&mut out, &answer.token.encode()).expect("strings serialize");
            out.push(b'}');
            out
        }
        Format::Ndjson => {
            let mut out = Vec::new();
            write_rows(answer, &mut out, b"\n");
            if !out.is_empty() {
                out.push(b'\n');
            }
            out
        }
        Format::Csv => {
            let mut out = String::new();
            let names: Vec<String> = answer
                .schema
                .fields()
                .iter()
                .map(|f| csv_cell(f.name()))
                .collect();
            out.push_str(&names.join(","));
            out.push_str("\r\n");
            for batch in &answer.batches {
                for row in 0..batch.num_rows() {
                    let cells: Vec<String> = batch
                        .columns()
                        .iter()
                        .map(|c| match cell(c.as_ref(), row, false) {
                            Value::Null => String::new(),
                            Value::String(s) => csv_cell(&s),
                            other => csv_cell(&other.to_string()),
                        })
                        .collect();
                    out.push_str(&cells.join(","));
                    out.push_str("\r\n");
                }
            }
            out.into_bytes()
        }
    }
}

fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ') {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_in_utc_with_their_precision() {
        assert_eq!(rfc3339(0, 1000, 3), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(1_795_683_600_500, 1000, 3),
            "2026-11-26T09:00:00.500Z"
        );
        assert_eq!(rfc3339(-1, 1000, 3), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(951_782_400, 1, 0), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(1_000_000_001, 1_000_000_000, 9),
            "1970-01-01T00:00:01.000000001Z"
        );
    }

    #[test]
    fn csv_cells_are_quoted_when_needed() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
    }
}
