//! AQL's functions that need no data: strings, numbers, arrays, objects, types and dates. The
//! functions that read views (`DOCUMENT`, `KNN`/`NEAR`, `FULLTEXT`, `TS_RANGE`, `NOW`) are in
//! [`super::eval`]; every name is listed in [`FUNCTIONS`], which the parser checks calls against.

use std::cmp::Ordering;

use chrono::{
    DateTime, Datelike, Duration as ChronoDuration, Months, NaiveDate, TimeZone, Timelike, Utc,
};
use serde_json::{Map, Value};

use super::value::{compare, equal, key, normalize, num, to_number, to_string, truthy, type_name};

/// Every function: name, fewest and most arguments.
pub const FUNCTIONS: &[(&str, usize, usize)] = &[
    // Types.
    ("IS_NULL", 1, 1),
    ("IS_BOOL", 1, 1),
    ("IS_NUMBER", 1, 1),
    ("IS_STRING", 1, 1),
    ("IS_ARRAY", 1, 1),
    ("IS_LIST", 1, 1),
    ("IS_OBJECT", 1, 1),
    ("IS_DOCUMENT", 1, 1),
    ("TYPENAME", 1, 1),
    ("TO_NUMBER", 1, 1),
    ("TO_STRING", 1, 1),
    ("TO_BOOL", 1, 1),
    ("TO_ARRAY", 1, 1),
    ("TO_LIST", 1, 1),
    ("NOT_NULL", 1, 64),
    ("COALESCE", 1, 64),
    ("FIRST_LIST", 1, 64),
    ("FIRST_DOCUMENT", 1, 64),
    // Numbers.
    ("ABS", 1, 1),
    ("CEIL", 1, 1),
    ("FLOOR", 1, 1),
    ("ROUND", 1, 2),
    ("SQRT", 1, 1),
    ("POW", 2, 2),
    ("EXP", 1, 1),
    ("LOG", 1, 1),
    ("LOG2", 1, 1),
    ("LOG10", 1, 1),
    ("PI", 0, 0),
    ("RANGE", 2, 3),
    // Strings.
    ("CONCAT", 1, 64),
    ("CONCAT_SEPARATOR", 2, 64),
    ("LOWER", 1, 1),
    ("UPPER", 1, 1),
    ("SUBSTRING", 2, 3),
    ("SUBSTR", 2, 3),
    ("LEFT", 2, 2),
    ("RIGHT", 2, 2),
    ("TRIM", 1, 2),
    ("LTRIM", 1, 2),
    ("RTRIM", 1, 2),
    ("CONTAINS", 2, 3),
    ("STARTS_WITH", 2, 2),
    ("FIND_FIRST", 2, 2),
    ("SPLIT", 1, 3),
    ("SUBSTITUTE", 3, 3),
    ("LIKE", 2, 3),
    ("REGEX_TEST", 2, 3),
    ("CHAR_LENGTH", 1, 1),
    ("REVERSE", 1, 1),
    ("JSON_STRINGIFY", 1, 1),
    ("JSON_PARSE", 1, 1),
    // Arrays, and the aggregate functions of COLLECT ... AGGREGATE.
    ("LENGTH", 1, 1),
    ("COUNT", 0, 1),
    ("FIRST", 1, 1),
    ("LAST", 1, 1),
    ("NTH", 2, 2),
    ("POSITION", 2, 3),
    ("PUSH", 2, 3),
    ("APPEND", 2, 3),
    ("SLICE", 2, 3),
    ("FLATTEN", 1, 2),
    ("UNIQUE", 1, 1),
    ("SORTED", 1, 1),
    ("SORTED_UNIQUE", 1, 1),
    ("UNION", 1, 64),
    ("UNION_DISTINCT", 1, 64),
    ("INTERSECTION", 1, 64),
    ("MINUS", 1, 64),
    ("SUM", 1, 1),
    ("MIN", 1, 1),
    ("MAX", 1, 1),
    ("AVG", 1, 1),
    ("AVERAGE", 1, 1),
    ("MEDIAN", 1, 1),
    ("VARIANCE", 1, 1),
    ("VARIANCE_POPULATION", 1, 1),
    ("STDDEV", 1, 1),
    ("STDDEV_POPULATION", 1, 1),
    ("COUNT_DISTINCT", 1, 1),
    ("COUNT_UNIQUE", 1, 1),
    // Objects.
    ("ATTRIBUTES", 1, 1),
    ("VALUES", 1, 1),
    ("HAS", 2, 2),
    ("KEEP", 2, 64),
    ("UNSET", 2, 64),
    ("MERGE", 1, 64),
    ("ZIP", 2, 2),
    // Dates (ISO 8601 strings or ms since the epoch; answers are ISO strings in UTC).
    ("DATE_TIMESTAMP", 1, 1),
    ("DATE_ISO8601", 1, 1),
    ("DATE_YEAR", 1, 1),
    ("DATE_MONTH", 1, 1),
    ("DATE_DAY", 1, 1),
    ("DATE_HOUR", 1, 1),
    ("DATE_MINUTE", 1, 1),
    ("DATE_SECOND", 1, 1),
    ("DATE_DAYOFWEEK", 1, 1),
    ("DATE_TRUNC", 2, 2),
    ("DATE_ADD", 3, 3),
    ("DATE_SUB", 3, 3),
    ("DATE_DIFF", 3, 4),
    // Reading views (see eval.rs).
    ("NOW", 0, 0),
    ("DOCUMENT", 1, 2),
    ("KNN", 3, 4),
    ("NEAR", 3, 4),
    ("FULLTEXT", 2, 3),
    ("BM25", 1, 1),
    ("TS_RANGE", 4, 6),
];

/// The parser's check of a call.
pub fn check(name: &str, args: usize) -> Result<(), String> {
    match FUNCTIONS.iter().find(|(n, _, _)| *n == name) {
        None => Err(format!("unknown function {name}()")),
        Some((_, lo, hi)) if args < *lo || args > *hi => Err(if lo == hi {
            format!(
                "{name}() takes {lo} argument{}, not {args}",
                if *lo == 1 { "" } else { "s" }
            )
        } else {
            format!("{name}() takes {lo} to {hi} arguments, not {args}")
        }),
        Some(_) => Ok(()),
    }
}

/// A function's failure (an argument of the wrong kind).
pub type FnResult = Result<Value, String>;

fn array_arg<'a>(name: &str, v: &'a Value) -> Result<&'a Vec<Value>, String> {
    v.as_array()
        .ok_or_else(|| format!("{name}() expects an array, not {}", type_name(v)))
}

fn numbers(values: &[Value]) -> Vec<f64> {
    values
        .iter()
        .filter(|v| !v.is_null())
        .map(to_number)
        .collect()
}

fn variance(values: &[Value], sample: bool) -> Option<f64> {
    let xs = numbers(values);
    let n = xs.len();
    if n == 0 || (sample && n < 2) {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let sq: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
    Some(sq / (if sample { n - 1 } else { n }) as f64)
}

fn unique(values: &[Value]) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    values
        .iter()
        .filter(|v| seen.insert(key(v)))
        .cloned()
        .collect()
}

fn sorted(mut values: Vec<Value>) -> Vec<Value> {
    values.sort_by(compare);
    values
}

fn flatten(values: &[Value], depth: i64, out: &mut Vec<Value>) {
    for v in values {
        match v {
            Value::Array(inner) if depth > 0 => flatten(inner, depth - 1, out),
            _ => out.push(v.clone()),
        }
    }
}

/// The part `[start, end)` of a sequence of `n` items that `offset` and `len` select:
/// negative offsets count from the end, a negative `len` stops that many before the end;
/// anything out of range is clamped (never an overflow).
fn bounds(n: usize, offset: i64, len: Option<i64>) -> (usize, usize) {
    let n = n as i64;
    let start = if offset < 0 {
        n.saturating_add(offset).max(0)
    } else {
        offset.min(n)
    };
    let end = match len {
        None => n,
        Some(l) if l < 0 => n.saturating_add(l).max(start),
        Some(l) => start.saturating_add(l).min(n),
    };
    (start as usize, end.max(start) as usize)
}

/// Characters of a string, counted and cut as characters (never inside one).
fn chars_slice(s: &str, offset: i64, len: Option<i64>) -> String {
    let chars: Vec<char> = s.chars().collect();
    let (start, end) = bounds(chars.len(), offset, len);
    chars[start..end].iter().collect()
}

fn int_arg(v: &Value) -> i64 {
    to_number(v).trunc() as i64
}

/// Calls pure function `name` (checked by [`check`]) on evaluated arguments.
pub fn call(name: &str, a: &[Value]) -> FnResult {
    let arg = |i: usize| a.get(i).unwrap_or(&Value::Null);
    Ok(match name {
        "IS_NULL" => Value::Bool(arg(0).is_null()),
        "IS_BOOL" => Value::Bool(arg(0).is_boolean()),
        "IS_NUMBER" => Value::Bool(arg(0).is_number()),
        "IS_STRING" => Value::Bool(arg(0).is_string()),
        "IS_ARRAY" | "IS_LIST" => Value::Bool(arg(0).is_array()),
        "IS_OBJECT" | "IS_DOCUMENT" => Value::Bool(arg(0).is_object()),
        "TYPENAME" => Value::from(type_name(arg(0))),
        "TO_NUMBER" => num(to_number(arg(0))),
        "TO_STRING" => Value::from(to_string(arg(0))),
        "TO_BOOL" => Value::Bool(truthy(arg(0))),
        "TO_ARRAY" | "TO_LIST" => match arg(0) {
            Value::Null => Value::Array(Vec::new()),
            Value::Array(x) => Value::Array(x.clone()),
            Value::Object(o) => Value::Array(o.values().cloned().collect()),
            v => Value::Array(vec![v.clone()]),
        },
        "NOT_NULL" | "COALESCE" => a
            .iter()
            .find(|v| !v.is_null())
            .cloned()
            .unwrap_or(Value::Null),
        "FIRST_LIST" => a
            .iter()
            .find(|v| v.is_array())
            .cloned()
            .unwrap_or(Value::Null),
        "FIRST_DOCUMENT" => a
            .iter()
            .find(|v| v.is_object())
            .cloned()
            .unwrap_or(Value::Null),

        "ABS" => num(to_number(arg(0)).abs()),
        "CEIL" => num(to_number(arg(0)).ceil()),
        "FLOOR" => num(to_number(arg(0)).floor()),
        "ROUND" => {
            let x = to_number(arg(0));
            match a.get(1) {
                None => num((x + 0.5).floor()),
                Some(d) => {
                    let p = 10f64.powi(int_arg(d).clamp(-15, 15) as i32);
                    num((x * p + 0.5).floor() / p)
                }
            }
        }
        "SQRT" => num(to_number(arg(0)).sqrt()),
        "POW" => num(to_number(arg(0)).powf(to_number(arg(1)))),
        "EXP" => num(to_number(arg(0)).exp()),
        "LOG" => num(to_number(arg(0)).ln()),
        "LOG2" => num(to_number(arg(0)).log2()),
        "LOG10" => num(to_number(arg(0)).log10()),
        "PI" => num(std::f64::consts::PI),
        "RANGE" => {
            let (from, to) = (to_number(arg(0)), to_number(arg(1)));
            let step = match a.get(2) {
                Some(s) => to_number(s),
                None if from <= to => 1.0,
                None => -1.0,
            };
            let steps = ((to - from) / step).floor();
            if step == 0.0 || steps.is_nan() || steps < 0.0 {
                return Err("RANGE() with a step that never reaches the end".into());
            }
            if steps >= super::eval::RANGE_MAX as f64 {
                return Err(format!(
                    "RANGE() of {} values (at most {})",
                    steps + 1.0,
                    super::eval::RANGE_MAX
                ));
            }
            let n = steps as u64 + 1;
            Value::Array((0..n).map(|i| num(from + i as f64 * step)).collect())
        }

        "CONCAT" => {
            let mut s = String::new();
            for v in a {
                match v {
                    Value::Array(items) => items.iter().for_each(|i| s.push_str(&to_string(i))),
                    v => s.push_str(&to_string(v)),
                }
            }
            Value::from(s)
        }
        "CONCAT_SEPARATOR" => {
            let sep = to_string(arg(0));
            let mut parts = Vec::new();
            for v in &a[1..] {
                match v {
                    Value::Array(items) => {
                        parts.extend(items.iter().filter(|i| !i.is_null()).map(to_string))
                    }
                    Value::Null => {}
                    v => parts.push(to_string(v)),
                }
            }
            Value::from(parts.join(&sep))
        }
        "LOWER" => Value::from(to_string(arg(0)).to_lowercase()),
        "UPPER" => Value::from(to_string(arg(0)).to_uppercase()),
        "SUBSTRING" | "SUBSTR" => Value::from(chars_slice(
            &to_string(arg(0)),
            int_arg(arg(1)),
            a.get(2).map(int_arg),
        )),
        "LEFT" => Value::from(chars_slice(
            &to_string(arg(0)),
            0,
            Some(int_arg(arg(1)).max(0)),
        )),
        "RIGHT" => {
            let s = to_string(arg(0));
            let n = int_arg(arg(1)).max(0);
            let len = s.chars().count() as i64;
            Value::from(chars_slice(&s, (len - n).max(0), None))
        }
        "TRIM" | "LTRIM" | "RTRIM" => {
            let s = to_string(arg(0));
            let set: Vec<char> = match a.get(1) {
                Some(Value::String(c)) => c.chars().collect(),
                _ => vec![' ', '\t', '\r', '\n'],
            };
            let t = match name {
                "TRIM" => s.trim_matches(|c| set.contains(&c)),
                "LTRIM" => s.trim_start_matches(|c| set.contains(&c)),
                _ => s.trim_end_matches(|c| set.contains(&c)),
            };
            Value::from(t)
        }
        "CONTAINS" => {
            let (s, sub) = (to_string(arg(0)), to_string(arg(1)));
            let at = s.find(&sub).map(|b| s[..b].chars().count() as i64);
            if a.get(2).is_some_and(truthy) {
                Value::from(at.unwrap_or(-1))
            } else {
                Value::Bool(at.is_some())
            }
        }
        "STARTS_WITH" => Value::Bool(to_string(arg(0)).starts_with(&to_string(arg(1)))),
        "FIND_FIRST" => {
            let (s, sub) = (to_string(arg(0)), to_string(arg(1)));
            Value::from(s.find(&sub).map_or(-1, |b| s[..b].chars().count() as i64))
        }
        "SPLIT" => {
            let s = to_string(arg(0));
            let limit = a.get(2).map(int_arg).filter(|l| *l >= 0);
            let parts: Vec<Value> = match a.get(1) {
                None | Some(Value::Null) => vec![Value::from(s)],
                Some(sep) => {
                    let sep = to_string(sep);
                    if sep.is_empty() {
                        s.chars().map(|c| Value::from(c.to_string())).collect()
                    } else {
                        s.split(sep.as_str()).map(Value::from).collect()
                    }
                }
            };
            Value::Array(match limit {
                Some(l) => parts.into_iter().take(l as usize).collect(),
                None => parts,
            })
        }
        "SUBSTITUTE" => {
            let s = to_string(arg(0));
            let search = to_string(arg(1));
            if search.is_empty() {
                Value::from(s)
            } else {
                Value::from(s.replace(&search, &to_string(arg(2))))
            }
        }
        "CHAR_LENGTH" => Value::from(to_string(arg(0)).chars().count()),
        "REVERSE" => match arg(0) {
            Value::Array(x) => Value::Array(x.iter().rev().cloned().collect()),
            v => Value::from(to_string(v).chars().rev().collect::<String>()),
        },
        "JSON_STRINGIFY" => Value::from(normalize(arg(0)).to_string()),
        "JSON_PARSE" => {
            serde_json::from_str(&to_string(arg(0))).map_err(|e| format!("JSON_PARSE(): {e}"))?
        }

        "LENGTH" | "COUNT" if a.is_empty() => {
            return Err(format!("{name}() needs an argument here"));
        }
        "LENGTH" | "COUNT" => Value::from(match arg(0) {
            Value::Null => 0,
            Value::Bool(b) => usize::from(*b),
            Value::Number(_) => to_string(arg(0)).chars().count(),
            Value::String(s) => s.chars().count(),
            Value::Array(x) => x.len(),
            Value::Object(o) => o.len(),
        }),
        "FIRST" => array_arg(name, arg(0))?
            .first()
            .cloned()
            .unwrap_or(Value::Null),
        "LAST" => array_arg(name, arg(0))?
            .last()
            .cloned()
            .unwrap_or(Value::Null),
        "NTH" => {
            let x = array_arg(name, arg(0))?;
            let i = int_arg(arg(1));
            if i < 0 {
                Value::Null
            } else {
                x.get(i as usize).cloned().unwrap_or(Value::Null)
            }
        }
        "POSITION" => {
            let x = array_arg(name, arg(0))?;
            let at = x.iter().position(|v| equal(v, arg(1)));
            if a.get(2).is_some_and(truthy) {
                Value::from(at.map_or(-1, |i| i as i64))
            } else {
                Value::Bool(at.is_some())
            }
        }
        "PUSH" => {
            let mut x = array_arg(name, arg(0))?.clone();
            if !(a.get(2).is_some_and(truthy) && x.iter().any(|v| equal(v, arg(1)))) {
                x.push(arg(1).clone());
            }
            Value::Array(x)
        }
        "APPEND" => {
            let mut x = array_arg(name, arg(0))?.clone();
            let more = match arg(1) {
                Value::Array(m) => m.clone(),
                v => vec![v.clone()],
            };
            x.extend(more);
            Value::Array(if a.get(2).is_some_and(truthy) {
                unique(&x)
            } else {
                x
            })
        }
        "SLICE" => {
            let x = array_arg(name, arg(0))?;
            let len = match a.get(2) {
                None | Some(Value::Null) => None,
                Some(l) => Some(int_arg(l)),
            };
            let (start, end) = bounds(x.len(), int_arg(arg(1)), len);
            Value::Array(x[start..end].to_vec())
        }
        "FLATTEN" => {
            let mut out = Vec::new();
            flatten(
                array_arg(name, arg(0))?,
                a.get(1).map_or(1, int_arg),
                &mut out,
            );
            Value::Array(out)
        }
        "UNIQUE" => Value::Array(unique(array_arg(name, arg(0))?)),
        "SORTED" => Value::Array(sorted(array_arg(name, arg(0))?.clone())),
        "SORTED_UNIQUE" => Value::Array(sorted(unique(array_arg(name, arg(0))?))),
        "UNION" | "UNION_DISTINCT" => {
            let mut out = Vec::new();
            for v in a {
                out.extend(array_arg(name, v)?.iter().cloned());
            }
            Value::Array(if name == "UNION_DISTINCT" {
                unique(&out)
            } else {
                out
            })
        }
        "INTERSECTION" => {
            let mut out = unique(array_arg(name, arg(0))?);
            for v in &a[1..] {
                let other = array_arg(name, v)?;
                out.retain(|x| other.iter().any(|y| equal(x, y)));
            }
            Value::Array(out)
        }
        "MINUS" => {
            let mut out = unique(array_arg(name, arg(0))?);
            for v in &a[1..] {
                let other = array_arg(name, v)?;
                out.retain(|x| !other.iter().any(|y| equal(x, y)));
            }
            Value::Array(out)
        }
        "SUM" => num(numbers(array_arg(name, arg(0))?).iter().sum()),
        "MIN" | "MAX" => {
            let x = array_arg(name, arg(0))?;
            let mut it = x.iter().filter(|v| !v.is_null());
            let first = it.next().cloned();
            let pick = |best: Value, v: &Value| {
                let o = compare(v, &best);
                if (name == "MIN" && o == Ordering::Less)
                    || (name == "MAX" && o == Ordering::Greater)
                {
                    v.clone()
                } else {
                    best
                }
            };
            match first {
                None => Value::Null,
                Some(f) => it.fold(f, pick),
            }
        }
        "AVG" | "AVERAGE" => {
            let xs = numbers(array_arg(name, arg(0))?);
            if xs.is_empty() {
                Value::Null
            } else {
                num(xs.iter().sum::<f64>() / xs.len() as f64)
            }
        }
        "MEDIAN" => {
            let mut xs = numbers(array_arg(name, arg(0))?);
            xs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
            match xs.len() {
                0 => Value::Null,
                n if n % 2 == 1 => num(xs[n / 2]),
                n => num((xs[n / 2 - 1] + xs[n / 2]) / 2.0),
            }
        }
        "VARIANCE" | "VARIANCE_POPULATION" => {
            variance(array_arg(name, arg(0))?, name == "VARIANCE").map_or(Value::Null, num)
        }
        "STDDEV" | "STDDEV_POPULATION" => variance(array_arg(name, arg(0))?, name == "STDDEV")
            .map_or(Value::Null, |v| num(v.sqrt())),
        "COUNT_DISTINCT" | "COUNT_UNIQUE" => Value::from(unique(array_arg(name, arg(0))?).len()),

        "ATTRIBUTES" => match arg(0) {
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                Value::Array(keys.into_iter().map(|k| Value::from(k.as_str())).collect())
            }
            v => {
                return Err(format!(
                    "ATTRIBUTES() expects an object, not {}",
                    type_name(v)
                ));
            }
        },
        "VALUES" => match arg(0) {
            Value::Object(o) => {
                let mut pairs: Vec<(&String, &Value)> = o.iter().collect();
                pairs.sort_by(|a, b| a.0.cmp(b.0));
                Value::Array(pairs.into_iter().map(|(_, v)| v.clone()).collect())
            }
            v => return Err(format!("VALUES() expects an object, not {}", type_name(v))),
        },
        "HAS" => Value::Bool(
            arg(0)
                .as_object()
                .is_some_and(|o| o.contains_key(&to_string(arg(1)))),
        ),
        "KEEP" | "UNSET" => {
            let Value::Object(o) = arg(0) else {
                return Err(format!(
                    "{name}() expects an object, not {}",
                    type_name(arg(0))
                ));
            };
            let mut names = Vec::new();
            for v in &a[1..] {
                match v {
                    Value::Array(x) => names.extend(x.iter().map(to_string)),
                    v => names.push(to_string(v)),
                }
            }
            let keep = name == "KEEP";
            Value::Object(
                o.iter()
                    .filter(|(k, _)| names.contains(k) == keep)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        }
        "MERGE" => {
            let parts: Vec<&Value> = match a {
                [Value::Array(x)] => x.iter().collect(),
                _ => a.iter().collect(),
            };
            let mut out = Map::new();
            for p in parts {
                match p {
                    Value::Object(o) => out.extend(o.iter().map(|(k, v)| (k.clone(), v.clone()))),
                    v => return Err(format!("MERGE() expects objects, not {}", type_name(v))),
                }
            }
            Value::Object(out)
        }
        "ZIP" => {
            let (k, v) = (array_arg(name, arg(0))?, array_arg(name, arg(1))?);
            if k.len() != v.len() {
                return Err("ZIP() expects two arrays of the same length".into());
            }
            Value::Object(k.iter().map(to_string).zip(v.iter().cloned()).collect())
        }

        "DATE_TIMESTAMP" => date(arg(0)).map_or(Value::Null, |d| Value::from(d.timestamp_millis())),
        "DATE_ISO8601" => date(arg(0)).map_or(Value::Null, iso),
        "DATE_YEAR" => date(arg(0)).map_or(Value::Null, |d| Value::from(d.year())),
        "DATE_MONTH" => date(arg(0)).map_or(Value::Null, |d| Value::from(d.month())),
        "DATE_DAY" => date(arg(0)).map_or(Value::Null, |d| Value::from(d.day())),
        "DATE_HOUR" => date(arg(0)).map_or(Value::Null, |d| Value::from(d.hour())),
        "DATE_MINUTE" => date(arg(0)).map_or(Value::Null, |d| Value::from(d.minute())),
        "DATE_SECOND" => date(arg(0)).map_or(Value::Null, |d| Value::from(d.second())),
        "DATE_DAYOFWEEK" => date(arg(0)).map_or(Value::Null, |d| {
            Value::from(d.weekday().num_days_from_sunday())
        }),
        "DATE_TRUNC" => match date(arg(0)) {
            None => Value::Null,
            Some(d) => iso(trunc(d, &unit(arg(1))?)),
        },
        "DATE_ADD" | "DATE_SUB" => match date(arg(0)) {
            None => Value::Null,
            Some(d) => {
                let mut n = to_number(arg(1));
                if name == "DATE_SUB" {
                    n = -n;
                }
                add(d, n, &unit(arg(2))?).map_or(Value::Null, iso)
            }
        },
        "DATE_DIFF" => match (date(arg(0)), date(arg(1))) {
            (Some(a0), Some(b0)) => {
                let ms = (b0 - a0).num_milliseconds() as f64;
                let u = unit(arg(2))?;
                let d = match u.as_str() {
                    "y" | "m" => {
                        // Whole calendar months from a0 to b0 (a month counts once b0 reaches
                        // a0's day and time in it), then the fraction of the next one.
                        let mut months = (b0.year() - a0.year()) as i64 * 12
                            + (b0.month() as i64 - a0.month() as i64);
                        let shifted = |m: i64| add(a0, m as f64, "m");
                        while months > 0 && shifted(months).is_some_and(|s| s > b0) {
                            months -= 1;
                        }
                        while months < 0 && shifted(months).is_some_and(|s| s < b0) {
                            months += 1;
                        }
                        let next = months + if b0 >= a0 { 1 } else { -1 };
                        let frac = match (shifted(months), shifted(next)) {
                            (Some(lo), Some(hi)) if hi != lo => {
                                (b0 - lo).num_milliseconds() as f64
                                    / (hi - lo).num_milliseconds().abs() as f64
                            }
                            _ => 0.0,
                        };
                        let m = months as f64 + frac;
                        if u == "y" { m / 12.0 } else { m }
                    }
                    _ => ms / unit_ms(&u),
                };
                if a.get(3).is_some_and(truthy) {
                    num(d)
                } else {
                    num(d.trunc())
                }
            }
            _ => Value::Null,
        },
        other => return Err(format!("{other}() is not a pure function")),
    })
}

/// A date from an ISO 8601 string (with or without time or zone; no zone is UTC) or ms since
/// the epoch; `None` for anything else.
pub fn date(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::Number(n) => Utc.timestamp_millis_opt(n.as_f64()? as i64).single(),
        Value::String(s) => {
            if let Ok(d) = DateTime::parse_from_rfc3339(s) {
                return Some(d.with_timezone(&Utc));
            }
            for f in [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%d %H:%M:%S",
                "%Y-%m-%dT%H:%M",
            ] {
                if let Ok(d) = chrono::NaiveDateTime::parse_from_str(s, f) {
                    return Some(d.and_utc());
                }
            }
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc())
        }
        _ => None,
    }
}

fn iso(d: DateTime<Utc>) -> Value {
    Value::from(d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// A unit's one-letter form: y, m, w, d, h, i (minutes), s, f (ms).
fn unit(v: &Value) -> Result<String, String> {
    let s = to_string(v).to_lowercase();
    Ok(match s.as_str() {
        "y" | "year" | "years" => "y",
        "m" | "month" | "months" => "m",
        "w" | "week" | "weeks" => "w",
        "d" | "day" | "days" => "d",
        "h" | "hour" | "hours" => "h",
        "i" | "minute" | "minutes" => "i",
        "s" | "second" | "seconds" => "s",
        "f" | "millisecond" | "milliseconds" => "f",
        _ => return Err(format!("unknown date unit {s:?} (years, months, weeks, days, hours, minutes, seconds, milliseconds)")),
    }
    .to_owned())
}

fn unit_ms(u: &str) -> f64 {
    match u {
        "w" => 604_800_000.0,
        "d" => 86_400_000.0,
        "h" => 3_600_000.0,
        "i" => 60_000.0,
        "s" => 1_000.0,
        _ => 1.0,
    }
}

fn trunc(d: DateTime<Utc>, u: &str) -> DateTime<Utc> {
    let day = |y, m, dd| {
        Utc.with_ymd_and_hms(y, m, dd, 0, 0, 0)
            .single()
            .unwrap_or(d)
    };
    match u {
        "y" => day(d.year(), 1, 1),
        "m" => day(d.year(), d.month(), 1),
        "w" => {
            day(d.year(), d.month(), d.day())
                - ChronoDuration::days(d.weekday().num_days_from_monday() as i64)
        }
        "d" => day(d.year(), d.month(), d.day()),
        "h" => d
            .with_minute(0)
            .and_then(|x| x.with_second(0))
            .and_then(|x| x.with_nanosecond(0))
            .unwrap_or(d),
        "i" => d
            .with_second(0)
            .and_then(|x| x.with_nanosecond(0))
            .unwrap_or(d),
        "s" => d.with_nanosecond(0).unwrap_or(d),
        _ => d,
    }
}

fn add(d: DateTime<Utc>, n: f64, u: &str) -> Option<DateTime<Utc>> {
    match u {
        "y" | "m" => {
            let months = (n * if u == "y" { 12.0 } else { 1.0 }).trunc() as i64;
            let count = Months::new(u32::try_from(months.unsigned_abs()).ok()?);
            if months >= 0 {
                d.checked_add_months(count)
            } else {
                d.checked_sub_months(count)
            }
        }
        // Out of chrono's range (±2^63 ms, or a date past year 262143): null, not a panic.
        _ => d.checked_add_signed(ChronoDuration::try_milliseconds((n * unit_ms(u)) as i64)?),
    }
}
