//! InfluxDB line protocol (`POST /v1/write_lp`): `measurement[,tag=v...] field=v[,field=v...]
//! [timestamp]`, one point per line, into time-series namespaces.
//!
//! The measurement is the namespace; every field is its own series, whose id is
//! [`series_id`](themis_materializers::timeseries::series_id)`(field, tags)`, and whose tags
//! travel in the points event's `data.tags`. Values: floats, integers (`1i`, `1u`; at most 2⁵³
//! in magnitude, so the f64 is exact), booleans (1 and 0). String fields are refused: a series
//! holds numbers. Timestamps are integers in `precision` (`ns` by default, as InfluxDB; `us`,
//! `ms`, `s`) converted to ms, rounding toward minus infinity; a line without one takes the
//! server's time. Escapes: `\,` `\ ` `\=` `\\` in names, `\"` `\\` in strings. Blank lines and
//! lines starting with `#` are skipped.

use std::collections::BTreeMap;

/// Time units of line-protocol timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Nanoseconds (InfluxDB's default).
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl Precision {
    /// Parses `ns`, `us`, `ms` or `s`.
    pub fn parse(text: &str) -> Option<Precision> {
        Some(match text {
            "ns" | "n" => Precision::Ns,
            "us" | "u" => Precision::Us,
            "ms" => Precision::Ms,
            "s" => Precision::S,
            _ => return None,
        })
    }

    fn to_ms(self, t: i64) -> Option<i64> {
        Some(match self {
            Precision::Ns => t.div_euclid(1_000_000),
            Precision::Us => t.div_euclid(1_000),
            Precision::Ms => t,
            Precision::S => t.checked_mul(1000)?,
        })
    }
}

/// One parsed line: a point of every field.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The measurement (namespace).
    pub measurement: String,
    /// Tags, by name.
    pub tags: BTreeMap<String, String>,
    /// Fields and their values, in line order.
    pub fields: Vec<(String, f64)>,
    /// Timestamp in ms (`None`: the server's time).
    pub ts_ms: Option<i64>,
}

/// A line that does not parse.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LineError {
    /// Line number (from 1).
    pub line: usize,
    /// Column (from 1, in characters) where the problem is.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Largest integer a field may hold: larger ones would not be exact as f64.
const EXACT_INT_MAX: i128 = 1 << 53;

/// Parses a whole body; every bad line is reported.
pub fn parse(body: &str, precision: Precision) -> (Vec<(usize, Line)>, Vec<LineError>) {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (i, text) in body.split('\n').enumerate() {
        let text = text.strip_suffix('\r').unwrap_or(text);
        let trimmed = text.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let offset = text.chars().count() - trimmed.chars().count();
        match parse_line(trimmed, precision) {
            Ok(line) => lines.push((i + 1, line)),
            Err((column, message)) => errors.push(LineError {
                line: i + 1,
                column: column + offset + 1,
                message,
            }),
        }
    }
    (lines, errors)
}

type Fail = (usize, String);

/// A cursor over a line's characters.
struct Cursor {
    chars: Vec<char>,
    at: usize,
}

impl Cursor {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    /// Reads an escaped name up to one of `stops` (unescaped); escapes of `\` before `,`, ` `,
    /// `=` and `\` are removed, any other backslash is kept.
    fn name(&mut self, stops: &[char], what: &str) -> Result<String, Fail> {
        let start = self.at;
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if stops.contains(&c) {
                break;
            }
            if c == '\\'
                && let Some(&next) = self.chars.get(self.at + 1)
                && matches!(next, ',' | ' ' | '=' | '\\')
            {
                out.push(next);
                self.at += 2;
                continue;
            }
            out.push(c);
            self.at += 1;
        }
        if out.is_empty() {
            return Err((start, format!("expected {what}")));
        }
        Ok(out)
    }

    fn expect(&mut self, c: char, what: &str) -> Result<(), Fail> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err((
                self.at,
                match self.peek() {
                    Some(found) => format!("expected {what}, found {found:?}"),
                    None => format!("expected {what}, found the end of the line"),
                },
            ))
        }
    }
}

fn parse_line(text: &str, precision: Precision) -> Result<Line, Fail> {
    let mut c = Cursor {
        chars: text.chars().collect(),
        at: 0,
    };
    let measurement = c.name(&[',', ' '], "a measurement")?;
    let mut tags = BTreeMap::new();
    while c.peek() == Some(',') {
        c.at += 1;
        let at = c.at;
        let key = c.name(&['=', ',', ' '], "a tag key")?;
        c.expect('=', "'=' after the tag key")?;
        let value = c.name(&[',', ' '], "a tag value")?;
        if tags.insert(key.clone(), value).is_some() {
            return Err((at, format!("tag {key:?} appears twice")));
        }
    }
    c.expect(' ', "a space before the fields")?;
    let mut fields = Vec::new();
    loop {
        let at = c.at;
        let key = c.name(&['=', ',', ' '], "a field key")?;
        c.expect('=', "'=' after the field key")?;
        let value_at = c.at;
        let value = field_value(&mut c)?;
        if fields.iter().any(|(k, _)| *k == key) {
            return Err((at, format!("field {key:?} appears twice")));
        }
        let value = value.map_err(|m| (value_at, m))?;
        fields.push((key, value));
        if c.peek() == Some(',') {
            c.at += 1;
            continue;
        }
        break;
    }
    let ts_ms = if c.peek() == Some(' ') {
        c.at += 1;
        let start = c.at;
        let digits: String = c.chars[c.at..].iter().collect();
        let digits = digits.trim_end();
        c.at += digits.chars().count();
        let t: i64 = digits.parse().map_err(|_| {
            (
                start,
                format!("expected an integer timestamp, found {digits:?}"),
            )
        })?;
        Some(
            precision
                .to_ms(t)
                .ok_or_else(|| (start, format!("timestamp {t} is out of range")))?,
        )
    } else {
        None
    };
    if let Some(extra) = c.peek() {
        return Err((c.at, format!("unexpected {extra:?} after the timestamp")));
    }
    Ok(Line {
        measurement,
        tags,
        fields,
        ts_ms,
    })
}

/// A field's value; the outer error is a syntax error, the inner one a value the series cannot
/// hold (reported at the value).
fn field_value(c: &mut Cursor) -> Result<Result<f64, String>, Fail> {
    if c.peek() == Some('"') {
        // Skip the string to report the right error, or a syntax error if unterminated.
        let start = c.at;
        c.at += 1;
        loop {
            match c.peek() {
                None => return Err((start, "unterminated string field".into())),
                Some('\\') => c.at += 2,
                Some('"') => {
                    c.at += 1;
                    break;
                }
                Some(_) => c.at += 1,
            }
        }
        return Ok(Err(
            "string fields are not supported: a time series holds numbers".into(),
        ));
    }
    let start = c.at;
    while let Some(ch) = c.peek() {
        if ch == ',' || ch == ' ' {
            break;
        }
        c.at += 1;
    }
    let raw: String = c.chars[start..c.at].iter().collect();
    if raw.is_empty() {
        return Err((start, "expected a field value".into()));
    }
    Ok(number(&raw))
}

fn number(raw: &str) -> Result<f64, String> {
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(0.0),
        _ => {}
    }
    if let Some(int) = raw.strip_suffix('i').or_else(|| raw.strip_suffix('u')) {
        let n: i128 = int
            .parse()
            .map_err(|_| format!("{raw:?} is not an integer field value"))?;
        if raw.ends_with('u') && n < 0 {
            return Err(format!("{raw:?}: an unsigned field cannot be negative"));
        }
        if n.abs() > EXACT_INT_MAX {
            return Err(format!(
                "{raw:?} is beyond ±2^53, where a 64-bit float is no longer exact"
            ));
        }
        return Ok(n as f64);
    }
    let looks_numeric = raw
        .chars()
        .all(|ch| ch.is_ascii_digit() || matches!(ch, '.' | '-' | '+' | 'e' | 'E'));
    match raw.parse::<f64>() {
        Ok(v) if looks_numeric && v.is_finite() => Ok(v),
        Ok(_) if looks_numeric => Err(format!("{raw:?} is out of the 64-bit float range")),
        _ => Err(format!(
            "{raw:?} is not a field value (a number, 1i, 1u, true/false or a string)"
        )),
    }
}

#[cfg(test)]
mod tests;
