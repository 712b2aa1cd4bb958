//! AQL's value semantics over JSON values, as ArangoDB defines them: a total order across types
//! (null < bool < number < string < array < object), truthiness, conversions to number and
//! string, and numbers that print as integers when they are whole.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// Rank of a value's type in the order across types.
pub fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// The type's name, as `TYPENAME` gives it.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Compares two values: by type rank, then numbers numerically, strings by code point, arrays
/// element by element (a missing element is null), objects by their sorted keys' values.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    let (ra, rb) = (type_rank(a), type_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(_), Value::Number(_)) => {
            let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => compare_all(x, y),
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let o = compare(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        }
        _ => Ordering::Equal,
    }
}

/// Compares two arrays element by element (a missing element is null).
pub fn compare_all(x: &[Value], y: &[Value]) -> Ordering {
    for i in 0..x.len().max(y.len()) {
        let o = compare(
            x.get(i).unwrap_or(&Value::Null),
            y.get(i).unwrap_or(&Value::Null),
        );
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Equality by [`compare`] (`1 == 1.0`).
pub fn equal(a: &Value, b: &Value) -> bool {
    compare(a, b) == Ordering::Equal
}

/// Truthiness: null, false, 0 and "" are false; everything else (empty arrays and objects
/// too) is true.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `TO_NUMBER`: null and false 0, true 1, numeric strings their number (others 0), an empty
/// array 0, a one-element array its element's number, other arrays and objects 0.
pub fn to_number(v: &Value) -> f64 {
    match v {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                return 0.0;
            }
            match t.parse::<f64>() {
                Ok(f) if f.is_finite() => f,
                _ => 0.0,
            }
        }
        Value::Array(a) if a.len() == 1 => to_number(&a[0]),
        Value::Array(_) | Value::Object(_) => 0.0,
    }
}

/// A number value: whole numbers within ±2^53 print as integers; NaN and infinities are null.
pub fn num(f: f64) -> Value {
    if !f.is_finite() {
        return Value::Null;
    }
    if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
        return Value::from(f as i64);
    }
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// `TO_STRING`: null "", booleans and numbers as written, strings themselves, arrays and
/// objects as JSON.
pub fn to_string(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(_) => normalize(v).to_string(),
        Value::String(s) => s.clone(),
        Value::Array(_) | Value::Object(_) => normalize(v).to_string(),
    }
}

/// The value with every number in its canonical form (`2.0` → `2`).
pub fn normalize(v: &Value) -> Value {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(_) => v.clone(),
            None => num(n.as_f64().unwrap_or(0.0)),
        },
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        _ => v.clone(),
    }
}

/// A key equal for equal values (grouping, `DISTINCT`, `UNIQUE`): canonical JSON with sorted
/// object keys.
pub fn key(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let mut pairs: Vec<(&String, &Value)> = o.iter().collect();
                pairs.sort_by(|a, b| a.0.cmp(b.0));
                let mut m = Map::new();
                for (k, v) in pairs {
                    m.insert(k.clone(), sorted(v));
                }
                Value::Object(m)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            Value::Number(_) => normalize(v),
            _ => v.clone(),
        }
    }
    sorted(v).to_string()
}

/// `LIKE` pattern to an anchored regular expression: `%` any run, `_` one character, `\`
/// escapes.
pub fn like_regex(pattern: &str) -> String {
    let mut out = String::from("(?s)^");
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => out.push_str(".*"),
            '_' => out.push('.'),
            '\\' => match chars.next() {
                Some(n) => out.push_str(&regex::escape(&n.to_string())),
                None => out.push_str(&regex::escape("\\")),
            },
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push('$');
    out
}
