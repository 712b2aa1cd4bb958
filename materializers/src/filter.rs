//! Payload filters of kNN and fulltext searches: a JSON object in the style of MongoDB's query
//! documents, evaluated against a resource's JSON payload.
//!
//! ```text
//! {"color": "red"}                      field equals (a field path may use dots: "a.b")
//! {"price": {"$lt": 10}}                $eq $ne $lt $lte $gt $gte
//! {"tag": {"$in": ["a", "b"]}}          $in $nin
//! {"note": {"$exists": false}}          $exists
//! {"$and": [...]} {"$or": [...]} {"$not": {...}}
//! ```
//!
//! Several keys in one object must all hold. Equality compares JSON values exactly, except
//! numbers, which compare by value (`1` equals `1.0`); an array field equals a scalar it
//! contains. Ordering operators compare numbers with numbers and strings with strings; any
//! other pair is false. A field that is absent matches only `$ne`, `$nin` and
//! `{"$exists": false}`.

use serde_json::Value;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every one holds.
    And(Vec<Filter>),
    /// At least one holds.
    Or(Vec<Filter>),
    /// It does not hold.
    Not(Box<Filter>),
    /// A condition on the value at a field path.
    Field(Vec<String>, Condition),
}

/// A condition on one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Equal.
    Eq(Value),
    /// Not equal (or absent).
    Ne(Value),
    /// Less than.
    Lt(Value),
    /// At most.
    Lte(Value),
    /// Greater than.
    Gt(Value),
    /// At least.
    Gte(Value),
    /// Equal to one of.
    In(Vec<Value>),
    /// Equal to none of (or absent).
    Nin(Vec<Value>),
    /// Present (or absent).
    Exists(bool),
}

/// Deepest nesting a filter may have (it is evaluated recursively).
pub const MAX_DEPTH: usize = 32;

impl Filter {
    /// Parses a filter object; the error says what is wrong and where.
    pub fn parse(value: &Value) -> Result<Filter, String> {
        parse_object(value, "filter", 0)
    }

    /// Whether `payload` satisfies the filter.
    pub fn matches(&self, payload: &Value) -> bool {
        match self {
            Filter::And(all) => all.iter().all(|f| f.matches(payload)),
            Filter::Or(any) => any.iter().any(|f| f.matches(payload)),
            Filter::Not(f) => !f.matches(payload),
            Filter::Field(path, condition) => {
                let mut at = Some(payload);
                for key in path {
                    at = at.and_then(|v| v.get(key.as_str()));
                }
                condition.holds(at)
            }
        }
    }
}

fn parse_object(value: &Value, at: &str, depth: usize) -> Result<Filter, String> {
    if depth > MAX_DEPTH {
        return Err(format!("{at}: filters nest at most {MAX_DEPTH} levels"));
    }
    let Value::Object(fields) = value else {
        return Err(format!("{at}: a filter is a JSON object, not {value}"));
    };
    let mut all = Vec::new();
    for (key, v) in fields {
        let here = format!("{at}.{key}");
        match key.as_str() {
            "$and" | "$or" => {
                let Value::Array(items) = v else {
                    return Err(format!("{here}: takes an array of filters"));
                };
                if items.is_empty() {
                    return Err(format!("{here}: takes at least one filter"));
                }
                let parsed = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| parse_object(item, &format!("{here}[{i}]"), depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                all.push(if key == "$and" {
                    Filter::And(parsed)
                } else {
                    Filter::Or(parsed)
                });
            }
            "$not" => all.push(Filter::Not(Box::new(parse_object(v, &here, depth + 1)?))),
            op if op.starts_with('$') => {
                return Err(format!(
                    "{here}: unknown operator {op:?} here (at the top of a filter: $and, $or, \
                     $not; on a field: $eq, $ne, $lt, $lte, $gt, $gte, $in, $nin, $exists)"
                ));
            }
            field => {
                if field.is_empty() || field.split('.').any(str::is_empty) {
                    return Err(format!("{here}: {field:?} is not a field path"));
                }
                let path: Vec<String> = field.split('.').map(str::to_owned).collect();
                for c in parse_conditions(v, &here)? {
                    all.push(Filter::Field(path.clone(), c));
                }
            }
        }
    }
    Ok(if all.len() == 1 {
        all.pop().expect("one")
    } else {
        Filter::And(all)
    })
}

fn parse_conditions(value: &Value, at: &str) -> Result<Vec<Condition>, String> {
    let Value::Object(ops) = value else {
        return Ok(vec![Condition::Eq(value.clone())]);
    };
    if !ops.keys().any(|k| k.starts_with('$')) {
        // A plain object: equality with it.
        return Ok(vec![Condition::Eq(value.clone())]);
    }
    let mut out = Vec::new();
    for (op, v) in ops {
        let list = |v: &Value| match v {
            Value::Array(items) => Ok(items.clone()),
            _ => Err(format!("{at}.{op}: takes an array")),
        };
        let ordered = |v: &Value| {
            if v.is_number() || v.is_string() {
                Ok(v.clone())
            } else {
                Err(format!("{at}.{op}: compares numbers or strings, not {v}"))
            }
        };
        out.push(match op.as_str() {
            "$eq" => Condition::Eq(v.clone()),
            "$ne" => Condition::Ne(v.clone()),
            "$lt" => Condition::Lt(ordered(v)?),
            "$lte" => Condition::Lte(ordered(v)?),
            "$gt" => Condition::Gt(ordered(v)?),
            "$gte" => Condition::Gte(ordered(v)?),
            "$in" => Condition::In(list(v)?),
            "$nin" => Condition::Nin(list(v)?),
            "$exists" => Condition::Exists(
                v.as_bool()
                    .ok_or_else(|| format!("{at}.$exists: takes true or false"))?,
            ),
            other => {
                return Err(format!(
                    "{at}: unknown operator {other:?} (use $eq, $ne, $lt, $lte, $gt, $gte, \
                     $in, $nin, $exists; mixing operators and plain keys is not allowed)"
                ));
            }
        });
    }
    Ok(out)
}

/// JSON equality with numbers compared by value.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// A field equals `want`: the value itself, or (for an array field and a non-array `want`)
/// one of its elements.
fn field_equals(field: &Value, want: &Value) -> bool {
    equal(field, want)
        || (!want.is_array()
            && field
                .as_array()
                .is_some_and(|items| items.iter().any(|i| equal(i, want))))
}

fn compare(field: &Value, bound: &Value) -> Option<std::cmp::Ordering> {
    match (field, bound) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => Some(i.cmp(&j)),
            _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Condition {
    fn holds(&self, field: Option<&Value>) -> bool {
        use std::cmp::Ordering::*;
        match (self, field) {
            (Condition::Exists(want), f) => f.is_some() == *want,
            (Condition::Ne(v), f) => !f.is_some_and(|f| field_equals(f, v)),
            (Condition::Nin(vs), f) => !f.is_some_and(|f| vs.iter().any(|v| field_equals(f, v))),
            (_, None) => false,
            (Condition::Eq(v), Some(f)) => field_equals(f, v),
            (Condition::In(vs), Some(f)) => vs.iter().any(|v| field_equals(f, v)),
            (Condition::Lt(b), Some(f)) => compare(f, b) == Some(Less),
            (Condition::Lte(b), Some(f)) => matches!(compare(f, b), Some(Less | Equal)),
            (Condition::Gt(b), Some(f)) => compare(f, b) == Some(Greater),
            (Condition::Gte(b), Some(f)) => matches!(compare(f, b), Some(Greater | Equal)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(filter: Value, payload: Value) -> bool {
        Filter::parse(&filter).unwrap().matches(&payload)
    }

    #[test]
    fn filters_match_as_documented() {
        let p = json!({"color": "red", "price": 7, "tags": ["a", "b"], "dim": {"w": 2.0}});
        assert!(m(json!({"color": "red"}), p.clone()));
        assert!(!m(json!({"color": "blue"}), p.clone()));
        assert!(m(json!({"price": 7.0}), p.clone()));
        assert!(m(json!({"price": {"$lt": 10, "$gte": 7}}), p.clone()));
        assert!(!m(json!({"price": {"$gt": 7}}), p.clone()));
        assert!(!m(json!({"price": {"$gt": "7"}}), p.clone()));
        assert!(m(json!({"tags": "a"}), p.clone()));
        assert!(m(json!({"tags": ["a", "b"]}), p.clone()));
        assert!(m(json!({"tags": {"$in": ["x", "b"]}}), p.clone()));
        assert!(m(json!({"dim.w": 2}), p.clone()));
        assert!(m(json!({"dim": {"w": 2}}), p.clone()));
        assert!(m(json!({"missing": {"$exists": false}}), p.clone()));
        assert!(m(json!({"missing": {"$ne": 1}}), p.clone()));
        assert!(!m(json!({"missing": {"$lt": 1}}), p.clone()));
        assert!(m(
            json!({"$or": [{"color": "blue"}, {"price": 7}]}),
            p.clone()
        ));
        assert!(m(json!({"$not": {"color": "blue"}}), p.clone()));
        assert!(!m(json!({"color": "red", "price": 8}), p.clone()));
        assert!(m(json!({}), p));
    }

    #[test]
    fn bad_filters_say_where() {
        for (f, needle) in [
            (json!([1]), "a filter is a JSON object"),
            (json!({"$and": {}}), "filter.$and: takes an array"),
            (json!({"$and": []}), "at least one"),
            (
                json!({"a": {"$lt": true}}),
                "filter.a.$lt: compares numbers or strings",
            ),
            (json!({"a": {"$foo": 1}}), "unknown operator \"$foo\""),
            (json!({"$foo": 1}), "unknown operator \"$foo\""),
            (json!({"a..b": 1}), "not a field path"),
            (json!({"a": {"$in": 1}}), "takes an array"),
            (json!({"a": {"$exists": 1}}), "true or false"),
        ] {
            let e = Filter::parse(&f).unwrap_err();
            assert!(e.contains(needle), "{f}: {e}");
        }
        let mut deep = json!({"a": 1});
        for _ in 0..40 {
            deep = json!({"$not": deep});
        }
        assert!(Filter::parse(&deep).unwrap_err().contains("nest"));
    }
}
