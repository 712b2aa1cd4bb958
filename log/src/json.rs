//! The rules a client's JSON (`data`, `metadata`) must follow to enter the log: what every view
//! can store. The log keeps the exact text the client sent, and each view parses it when it
//! applies the entry, so text a view cannot parse would stop that view for good (the log is never
//! rewritten). [`check`] is applied twice: at the edge, where breaking a rule is a 400 naming the
//! event and the field, and by every view worker before it applies an entry, where an entry that
//! breaks one (committed by an older version) is rejected by the views instead of stopping them.
//!
//! The rules: the text is one JSON value (RFC 8259) whose strings are valid Unicode (no lone
//! surrogate escapes such as `"\ud800"`), whose numbers are within a double's range (`1e999`,
//! `-1e400` and a 400-digit integer are not; an integer beyond 64 bits that fits a double is kept
//! as the nearest double), nested at most [`DEPTH_MAX`] levels, and whose objects name each
//! member once (a repeated name would silently drop a value).

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// Deepest nesting of objects and arrays (the outermost object is level 1). Views keep a
/// document inside a record of their own and parse it with serde_json, whose limit is 128.
pub const DEPTH_MAX: usize = 64;

/// Why a JSON text breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsonError {
    /// Where, relative to the value checked: `""` for the value itself, `.a.b[3]`, `["a b"]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Checks `text` against the rules (see the module documentation). It runs on the write path
/// and in every view worker, so it builds nothing when the text is fine: member names are
/// borrowed where they have no escapes, and the path to a fault is gathered only while its
/// error unwinds.
pub fn check(text: &str) -> Result<(), JsonError> {
    let path = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_str(text);
    let checked = Checker {
        path: &path,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    checked.map_err(|e| {
        let mut message = e.to_string();
        if message.contains("escape") {
            message.push_str(
                " (a \\u escape must stand for a Unicode character: a surrogate needs its pair)",
            );
        }
        // Steps were recorded innermost first, as the error left each level.
        let mut steps = path.into_inner();
        steps.reverse();
        JsonError {
            path: render(&steps),
            message,
        }
    })
}

/// One step of the path to the value being checked.
enum Step {
    Key(String),
    Index(usize),
}

fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k)
                if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                out.push('.');
                out.push_str(k);
            }
            Step::Key(k) => {
                out.push('[');
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(']');
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Visits a value without building it. When a member or element fails, its level adds its
/// step to `path` on the way out, so after an error `path` leads (innermost first) to it.
#[derive(Clone, Copy)]
struct Checker<'p> {
    path: &'p RefCell<Vec<Step>>,
    depth: usize,
}

impl Checker<'_> {
    fn inner<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.depth >= DEPTH_MAX {
            return Err(E::custom(format!(
                "nested deeper than {DEPTH_MAX} levels of objects and arrays"
            )));
        }
        Ok(Checker {
            path: self.path,
            depth: self.depth + 1,
        })
    }

    /// Records `step` when `result` is an error leaving this level.
    fn leaving<T, E>(self, result: Result<T, E>, step: impl FnOnce() -> Step) -> Result<T, E> {
        if result.is_err() {
            self.path.borrow_mut().push(step());
        }
        result
    }
}

impl<'de> DeserializeSeed<'de> for Checker<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checker<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json refuses numbers beyond a double's range itself; this keeps the rule if
        // that ever changes.
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom("number out of range"))
        }
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        for i in 0.. {
            let element = seq.next_element_seed(inner);
            if self.leaving(element, || Step::Index(i))?.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        let mut names: Vec<Cow<'de, str>> = Vec::new();
        while let Some(Name(name)) = map.next_key()? {
            let value = map.next_value_seed(inner);
            self.leaving(value, || Step::Key(name.to_string()))?;
            names.push(name);
        }
        // Sorted once, not compared pairwise: an object may have a hundred thousand members.
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
            self.path.borrow_mut().push(Step::Key(twice[0].to_string()));
            return Err(A::Error::custom(
                "this member name appears twice in its object (the first value would be lost)",
            ));
        }
        Ok(())
    }
}

/// A member name, borrowed from the text when it has no escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests;
