//! InfluxDB line protocol (`POST /v1/write_lp`): `measurement[,tag=v...] field=v[,field=v...]
//! [timestamp]`, one point per line, into time-series namespaces.
//!
//! The measurement is the namespace; every field is its own series, whose id is
//! [`series_id`](themis_materializers::timeseries::series_id)`(field, tags)`, and whose tags
//! travel in the points event's `data.tags`. Values: floats, integers (`1i`, `1u`; at most 2⁵³
//! in magnitude, so the f64 is exact), booleans (1 and 0). Timestamps are integers in
//! `precision` (`ns` by default, as InfluxDB; `us`, `ms`, `s`) converted to ms, rounding toward
//! minus infinity; a line without one takes the server's time.
//!
//! The syntax is InfluxData's reference decoder's (Go `github.com/influxdata/line-protocol/v2`,
//! package `lineprotocol`; the tests re-express the cases of its corpus,
//! `influxdata/line-protocol-corpus`, for whitespace, escapes and invalid characters):
//! - Lines end at `\n` or `\r\n`; a `\r` anywhere else is an error. A string field value may
//!   hold newlines. Blank lines, and lines whose first non-space character is `#` (comments),
//!   are skipped.
//! - Whitespace is the space character only: one or more spaces separate the measurement and
//!   tags from the fields and the fields from the timestamp, and spaces may lead and trail a
//!   line. A tab is not whitespace.
//! - ASCII control characters (U+0000 to U+001F, tab included, and U+007F) are refused
//!   everywhere outside string field values, comments included.
//! - A backslash escapes the characters its section treats specially and nothing else: `\,` and
//!   `\ ` in the measurement; `\,`, `\=` and `\ ` in tag keys, tag values and field keys. Any
//!   other backslash is kept as it is, so `\\` stays two backslashes and `a\\,b` is `a\,b`.
//!   An unescaped `=` in a tag value is an error. In string values `\"` does not end the string.
//! - Numbers and timestamps may start with `-`, never `+`.
//!
//! Deliberate differences from InfluxData's decoder: string fields are refused (a series holds
//! numbers), integers beyond ±2⁵³ are refused (the f64 would not be exact), a field named twice
//! in a line is refused (the decoder leaves that to its caller; its corpus, like this parser,
//! refuses a tag named twice),
//! and hexadecimal floats (`0x1p4`, which Go's `ParseFloat` reads) are not numbers here.
//! InfluxDB 3 (`influxdb_line_protocol`) and the table in InfluxData's line protocol reference
//! read `\\` in names as one backslash, and InfluxDB 3 takes tabs as whitespace; this parser
//! follows the Go decoder, whose corpus is the reference the tests use.

use std::collections::{BTreeMap, BTreeSet};

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

/// Characters a backslash escapes, and that end a name unless escaped, in a measurement.
const MEASUREMENT_SPECIALS: &[u8] = b", ";

/// Likewise in tag keys, tag values and field keys.
const KEY_SPECIALS: &[u8] = b",= ";

/// Parses a body, handing each good line (with its number) to `on_line` as it goes (with
/// `all_or_nothing`, only until the first bad one: the body is refused whole then, so later
/// good lines need not be kept). Returns the first `errors_max` errors and how many there
/// were. Nothing here holds more than one line, so a 16 MiB body of tiny lines costs what
/// `on_line` keeps (a `Vec` of parsed lines cost about 60 times the body).
pub fn parse_each(
    body: &str,
    precision: Precision,
    errors_max: usize,
    all_or_nothing: bool,
    mut on_line: impl FnMut(usize, Line),
) -> (Vec<LineError>, usize) {
    let mut p = Parser {
        text: body,
        bytes: body.as_bytes(),
        at: 0,
    };
    let mut numbers = LineNumbers {
        bytes: body.as_bytes(),
        counted: 0,
        number: 1,
        line_start: 0,
    };
    let mut errors = Vec::new();
    let mut error_count = 0usize;
    loop {
        p.skip_spaces();
        let start = p.at;
        let outcome = match (p.peek(), p.eol_len()) {
            (None, _) => break,
            (_, Some(eol)) => {
                p.at += eol;
                continue;
            }
            (Some(b'#'), _) => p.comment().map(|()| None),
            _ => p.point(precision).map(Some),
        };
        match outcome {
            Ok(Some(line)) if error_count == 0 || !all_or_nothing => {
                on_line(numbers.line(start), line)
            }
            Ok(_) => {}
            Err((offset, message)) => {
                error_count += 1;
                if errors.len() < errors_max {
                    let (line, column) = numbers.position(offset);
                    errors.push(LineError {
                        line,
                        column,
                        message,
                    });
                }
                p.skip_line();
            }
        }
    }
    (errors, error_count)
}

/// An error: its byte offset in the body and what is wrong.
type Fail = (usize, String);

/// Whether InfluxData's parser refuses `b` outside strings: C0 controls and DEL.
fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Turns byte offsets into line numbers and columns; offsets must come in increasing order, so
/// a whole body is counted once.
struct LineNumbers<'a> {
    bytes: &'a [u8],
    counted: usize,
    number: usize,
    line_start: usize,
}

impl LineNumbers<'_> {
    fn line(&mut self, offset: usize) -> usize {
        let end = offset.min(self.bytes.len());
        for i in self.counted..end {
            if self.bytes[i] == b'\n' {
                self.number += 1;
                self.line_start = i + 1;
            }
        }
        self.counted = self.counted.max(end);
        self.number
    }

    /// Line (from 1) and column (from 1, in characters) of `offset`.
    fn position(&mut self, offset: usize) -> (usize, usize) {
        let line = self.line(offset);
        let chars = self.bytes.get(self.line_start..offset).map_or(0, |before| {
            // Count characters, not bytes: skip UTF-8 continuation bytes.
            before.iter().filter(|&&b| b & 0xC0 != 0x80).count()
        });
        (line, chars + 1)
    }
}

/// A cursor over the body's bytes. Every character the syntax gives a meaning is ASCII, and
/// UTF-8 never puts an ASCII byte inside a longer character, so the cursor stops only on
/// character boundaries and slices of `text` between stops are whole characters.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// The length of the line ending at the cursor (0 at the end of the body), if there is one.
    fn eol_len(&self) -> Option<usize> {
        match (self.peek(), self.bytes.get(self.at + 1)) {
            (None, _) => Some(0),
            (Some(b'\n'), _) | (Some(b'\r'), None) => Some(1),
            (Some(b'\r'), Some(b'\n')) => Some(2),
            _ => None,
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
    }

    /// After an error: on to the next line.
    fn skip_line(&mut self) {
        match self.bytes[self.at.min(self.bytes.len())..]
            .iter()
            .position(|&b| b == b'\n')
        {
            Some(n) => self.at += n + 1,
            None => self.at = self.bytes.len(),
        }
    }

    /// What is at the cursor, for messages.
    fn found(&self) -> String {
        if self.eol_len().is_some() {
            return "the end of the line".into();
        }
        match self
            .text
            .get(self.at..)
            .and_then(|rest| rest.chars().next())
        {
            Some(c) if c.is_ascii_control() => format!("{c:?} (a control character)"),
            Some(c) => format!("{c:?}"),
            None => "the end of the line".into(),
        }
    }

    fn unexpected(&self, expected: &str) -> Fail {
        (
            self.at,
            format!("expected {expected}, found {}", self.found()),
        )
    }

    fn expect(&mut self, c: u8, expected: &str) -> Result<(), Fail> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    /// One or more spaces.
    fn spaces(&mut self, expected: &str) -> Result<(), Fail> {
        if self.peek() != Some(b' ') {
            return Err(self.unexpected(expected));
        }
        self.skip_spaces();
        Ok(())
    }

    /// A comment up to its line's end: any characters but control ones.
    fn comment(&mut self) -> Result<(), Fail> {
        loop {
            if let Some(eol) = self.eol_len() {
                self.at += eol;
                return Ok(());
            }
            if self.peek().is_some_and(is_control) {
                return Err((self.at, format!("a comment cannot hold {}", self.found())));
            }
            self.at += 1;
        }
    }

    /// A non-empty name up to an unescaped special or a control character; a backslash before
    /// a special is removed, any other backslash kept.
    fn name(&mut self, specials: &[u8], what: &str) -> Result<String, Fail> {
        let start = self.at;
        let mut out = String::new();
        let mut plain_from = start;
        while let Some(b) = self.peek() {
            if is_control(b) || specials.contains(&b) {
                break;
            }
            if b == b'\\'
                && let Some(&next) = self.bytes.get(self.at + 1)
                && specials.contains(&next)
            {
                out.push_str(&self.text[plain_from..self.at]);
                out.push(char::from(next));
                self.at += 2;
                plain_from = self.at;
                continue;
            }
            self.at += 1;
        }
        out.push_str(&self.text[plain_from..self.at]);
        if out.is_empty() {
            return Err(self.unexpected(what));
        }
        Ok(out)
    }

    fn point(&mut self, precision: Precision) -> Result<Line, Fail> {
        let measurement = self.name(MEASUREMENT_SPECIALS, "a measurement")?;
        let mut tags = BTreeMap::new();
        while self.peek() == Some(b',') {
            self.at += 1;
            let at = self.at;
            let key = self.name(KEY_SPECIALS, "a tag key")?;
            self.expect(b'=', "'=' after the tag key")?;
            let value = self.name(KEY_SPECIALS, "a tag value")?;
            if self.peek() == Some(b'=') {
                return Err((
                    self.at,
                    "'=' in a tag value must be escaped as \\=".to_owned(),
                ));
            }
            if tags.insert(key.clone(), value).is_some() {
                return Err((at, format!("tag {key:?} appears twice")));
            }
        }
        self.spaces("a space before the fields")?;
        let mut fields = Vec::new();
        // Field keys seen, so that a line of a million fields is not checked in quadratic time.
        let mut keys = BTreeSet::new();
        loop {
            let at = self.at;
            let key = self.name(KEY_SPECIALS, "a field key")?;
            self.expect(b'=', "'=' after the field key")?;
            let value_at = self.at;
            let value = self.field_value()?;
            if !keys.insert(key.clone()) {
                return Err((at, format!("field {key:?} appears twice")));
            }
            let value = value.map_err(|m| (value_at, m))?;
            fields.push((key, value));
            if self.peek() == Some(b',') {
                self.at += 1;
                continue;
            }
            break;
        }
        let mut ts_ms = None;
        if self.peek() == Some(b' ') {
            self.skip_spaces();
            if self.eol_len().is_none() {
                ts_ms = Some(self.timestamp(precision)?);
                self.skip_spaces();
            }
        }
        match self.eol_len() {
            Some(eol) => self.at += eol,
            None if ts_ms.is_some() => {
                return Err(self.unexpected("the end of the line after the timestamp"));
            }
            None => return Err(self.unexpected("',', a space or the end of the line")),
        }
        Ok(Line {
            measurement,
            tags,
            fields,
            ts_ms,
        })
    }

    /// A token up to a space, a comma (if `comma_ends`) or the line's end.
    fn token(&mut self, comma_ends: bool) -> &'a str {
        let start = self.at;
        while let Some(b) = self.peek() {
            if b == b' ' || b == b'\n' || b == b'\r' || (comma_ends && b == b',') {
                break;
            }
            self.at += 1;
        }
        &self.text[start..self.at]
    }

    fn timestamp(&mut self, precision: Precision) -> Result<i64, Fail> {
        let start = self.at;
        let digits = self.token(false);
        let unsigned = digits.strip_prefix('-').unwrap_or(digits);
        if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
            return Err((
                start,
                format!("expected an integer timestamp, found {digits:?}"),
            ));
        }
        let t: Option<i64> = digits.parse().ok();
        t.and_then(|t| precision.to_ms(t))
            .ok_or_else(|| (start, format!("timestamp {digits} is out of range")))
    }

    /// A field's value; the outer error is a syntax error, the inner one a value the series
    /// cannot hold (reported at the value).
    fn field_value(&mut self) -> Result<Result<f64, String>, Fail> {
        let start = self.at;
        if self.peek() == Some(b'"') {
            // Skip the string (it may span lines) to report the right error, or a syntax
            // error if it never ends.
            self.at += 1;
            loop {
                match self.peek() {
                    None => return Err((start, "unterminated string field".into())),
                    Some(b'\\') => self.at = (self.at + 2).min(self.bytes.len()),
                    Some(b'"') => {
                        self.at += 1;
                        break;
                    }
                    Some(_) => self.at += 1,
                }
            }
            return Ok(Err(
                "string fields are not supported: a time series holds numbers".into(),
            ));
        }
        let raw = self.token(true);
        if raw.is_empty() {
            return Err(self.unexpected("a field value"));
        }
        Ok(number(raw))
    }
}

fn number(raw: &str) -> Result<f64, String> {
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(0.0),
        _ => {}
    }
    let not_a_value =
        || format!("{raw:?} is not a field value (a number, 1i, 1u, true/false or a string)");
    // As InfluxData's parser: a number starts with '-', a digit or '.' (no '+', no "inf").
    if !raw.starts_with(|c: char| c == '-' || c == '.' || c.is_ascii_digit()) {
        return Err(not_a_value());
    }
    if let Some((int, unsigned)) = raw
        .strip_suffix('i')
        .map(|int| (int, false))
        .or_else(|| raw.strip_suffix('u').map(|int| (int, true)))
    {
        let digits = if unsigned {
            int
        } else {
            int.strip_prefix('-').unwrap_or(int)
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(if unsigned && int.starts_with('-') {
                format!("{raw:?}: an unsigned field cannot be negative")
            } else {
                format!("{raw:?} is not an integer field value")
            });
        }
        // Digits only: parsing fails only past i128, far beyond the limit.
        return match int.parse::<i128>() {
            Ok(n) if n.abs() <= EXACT_INT_MAX => Ok(n as f64),
            _ => Err(format!(
                "{raw:?} is beyond ±2^53, where a 64-bit float is no longer exact"
            )),
        };
    }
    let looks_numeric = raw
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    match raw.parse::<f64>() {
        Ok(v) if looks_numeric && v.is_finite() => Ok(v),
        Ok(_) if looks_numeric => Err(format!("{raw:?} is out of the 64-bit float range")),
        _ => Err(not_a_value()),
    }
}

#[cfg(test)]
mod tests;
