//! Relational partitions built whole straight from the rows' JSON text: each row's declared
//! columns are read while the text is parsed, without building the row as a JSON value
//! (about a map and a string per field less per row), with the same conversions as
//! [`Builder::push`] (a value that does not convert to its column's type reads as NULL).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use themis_materializers::namespaces::rfc3339_ms;

use super::{Builder, Kind};

/// Where the declared columns of a layout are: field name → column.
pub(super) struct Fields<'l> {
    columns: BTreeMap<&'l str, usize>,
    /// Per column of the layout: whether this row set it already.
    set: Vec<bool>,
}

impl<'l> Fields<'l> {
    /// The declared columns of `columns` (`(kind, field name)`, `None` for implicit ones).
    pub(super) fn new(columns: impl IntoIterator<Item = (usize, &'l str)>, width: usize) -> Self {
        Fields {
            columns: columns.into_iter().map(|(i, name)| (name, i)).collect(),
            set: vec![false; width],
        }
    }

    /// Appends the declared columns of the row whose state is JSON text `data` to
    /// `builders` (each exactly once: NULL when absent or not convertible).
    pub(super) fn push(
        &mut self,
        kinds: &[Kind],
        builders: &mut [Builder],
        data: &str,
    ) -> Result<(), serde_json::Error> {
        self.set.fill(false);
        // A state that is not an object has no members: every column reads NULL.
        if data.trim_start().starts_with('{') {
            let mut de = serde_json::Deserializer::from_str(data);
            de.deserialize_map(RowVisitor {
                fields: self,
                kinds,
                builders,
            })?;
            de.end()?;
        }
        for &i in self.columns.values() {
            if !self.set[i] {
                builders[i].push(None);
            }
        }
        Ok(())
    }
}

/// A top-level member name, borrowed from the text unless it holds escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(s.into()))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(s.to_owned().into()))
            }
        }
        d.deserialize_str(V)
    }
}

/// An object state: its declared members go to their columns, the others are skipped.
struct RowVisitor<'a, 'l> {
    fields: &'a mut Fields<'l>,
    kinds: &'a [Kind],
    builders: &'a mut [Builder],
}

impl<'de> Visitor<'de> for RowVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(name)) = map.next_key()? {
            match self.fields.columns.get(name.as_ref()) {
                // A member named twice (no stored state has one): the first counts.
                Some(&i) if !self.fields.set[i] => {
                    self.fields.set[i] = true;
                    map.next_value_seed(Cell {
                        kind: self.kinds[i],
                        builder: &mut self.builders[i],
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// One member's value, appended to its column's builder.
struct Cell<'a> {
    kind: Kind,
    builder: &'a mut Builder,
}

impl<'de> DeserializeSeed<'de> for Cell<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.kind == Kind::Json {
            // The value's text as written: the view writes values as `serde_json` does, so
            // it is the text the value would print as.
            let raw = <&RawValue as serde::Deserialize>::deserialize(d)?;
            match self.builder {
                Builder::Json(b) if raw.get() != "null" => b.append_value(raw.get()),
                other => other.push(None),
            }
            return Ok(());
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Cell<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        match self.builder {
            Builder::Bool(b) => b.append_value(v),
            other => other.push(None),
        }
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        match self.builder {
            Builder::Int(b) => b.append_value(v),
            Builder::Float(b) => b.append_value(v as f64),
            Builder::Timestamp(b) => b.append_value(v),
            other => other.push(None),
        }
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        match (self.builder, i64::try_from(v)) {
            (Builder::Int(b), Ok(n)) => b.append_value(n),
            (Builder::Float(b), _) => b.append_value(v as f64),
            (Builder::Timestamp(b), Ok(n)) => b.append_value(n),
            (other, _) => other.push(None),
        }
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        match self.builder {
            Builder::Float(b) => b.append_value(v),
            other => other.push(None),
        }
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        match self.builder {
            Builder::Text(b) => b.append_value(v),
            Builder::Timestamp(b) => b.append_option(rfc3339_ms(v)),
            other => other.push(None),
        }
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.builder.push(None);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.builder.push(None);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.builder.push(None);
        Ok(())
    }
}
