//! Resource names: `urn:themis:{model}:{namespace}:{id}` (DESIGN.md §2). Owns the grammar and
//! its error messages, and the file names namespaces get on disk. Invariant: a `Urn` value only
//! exists for a string that satisfies the grammar, and it keeps that string verbatim, so
//! `Urn::parse(u.as_str()) == Ok(u)` for every `Urn` but one kind: a URN decoded from the log
//! ([`Urn::parse_logged`]) may carry the namespace `.` or `..`, which older versions accepted.
//! Namespaces never become paths as given: see [`namespace_file_name`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The fixed prefix of every URN.
pub const URN_PREFIX: &str = "urn:themis:";

/// Longest namespace, in bytes (the namespace alphabet is ASCII, so bytes and characters agree).
pub const NAMESPACE_LEN_MAX: usize = 64;

/// Longest id, in bytes (the id alphabet is ASCII, so bytes and characters agree).
pub const ID_LEN_MAX: usize = 256;

/// Longest input an error message repeats verbatim; longer inputs are cut and marked with `...`,
/// so a hostile multi-megabyte "URN" cannot blow up an error body or a log line.
const ECHO_LEN_MAX: usize = 400;

/// The data model a resource belongs to; it decides which materializer builds its view.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// Rows of a declared schema, queried with SQL.
    Relational,
    /// Schemaless JSON documents.
    Document,
    /// Vertices and labelled edges.
    Graph,
    /// Embeddings searched by nearest neighbour.
    Vector,
    /// Timestamped numeric points.
    Timeseries,
}

impl Model {
    /// Every model, in declaration order.
    pub const ALL: [Model; 5] = [
        Model::Relational,
        Model::Document,
        Model::Graph,
        Model::Vector,
        Model::Timeseries,
    ];

    /// The lowercase name used in URNs, URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Model::Relational => "relational",
            Model::Document => "document",
            Model::Graph => "graph",
            Model::Vector => "vector",
            Model::Timeseries => "timeseries",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Model {
    type Err = UrnError;

    /// Parses the exact lowercase name; `Document` or ` document` are rejected.
    fn from_str(s: &str) -> Result<Model, UrnError> {
        Model::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UrnError::UnknownModelName { name: echo(s) })
    }
}

/// Why a string is not a valid URN (or model name). Every message names the offending part and,
/// where there is one, the 1-based column of the first bad character, shown escaped.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum UrnError {
    /// The input does not start with `urn:themis:`.
    #[error("invalid urn {input:?}: must start with \"urn:themis:\"")]
    MissingPrefix {
        /// The rejected input (cut if very long).
        input: String,
    },
    /// Fewer than the three parts model, namespace and id follow the prefix.
    #[error(
        "invalid urn {input:?}: expected urn:themis:{{model}}:{{namespace}}:{{id}}, \
         found {found} of 3 parts after the prefix"
    )]
    TooFewParts {
        /// The rejected input (cut if very long).
        input: String,
        /// How many `:`-separated parts follow the prefix.
        found: usize,
    },
    /// The model part is not one of the five models.
    #[error(
        "invalid urn {input:?}: unknown model {model:?} at column {column}; \
         allowed are relational, document, graph, vector, timeseries"
    )]
    UnknownModel {
        /// The rejected input (cut if very long).
        input: String,
        /// The model part as written.
        model: String,
        /// 1-based column where the model part starts.
        column: usize,
    },
    /// A model name on its own (not inside a URN) is not one of the five models.
    #[error("unknown model {name:?}; allowed are relational, document, graph, vector, timeseries")]
    UnknownModelName {
        /// The rejected name (cut if very long).
        name: String,
    },
    /// The namespace part is empty.
    #[error(
        "invalid urn {input:?}: namespace at column {column} is empty; it needs 1 to 64 characters"
    )]
    EmptyNamespace {
        /// The rejected input (cut if very long).
        input: String,
        /// 1-based column where the namespace should start.
        column: usize,
    },
    /// The namespace part is longer than [`NAMESPACE_LEN_MAX`].
    #[error(
        "invalid urn {input:?}: namespace at column {column} is {len} characters long; \
         the maximum is 64"
    )]
    NamespaceTooLong {
        /// The rejected input (cut if very long).
        input: String,
        /// 1-based column where the namespace starts.
        column: usize,
        /// Length of the namespace in characters.
        len: usize,
    },
    /// The namespace is `.` or `..`, which name directories.
    #[error(
        "invalid urn {input:?}: namespace at column {column} is {namespace:?}; `.` and `..` are not \
         namespace names"
    )]
    DotNamespace {
        /// The rejected input (cut if very long).
        input: String,
        /// The namespace.
        namespace: String,
        /// 1-based column where the namespace starts.
        column: usize,
    },
    /// The namespace contains a character outside `[a-z0-9_.-]`.
    #[error(
        "invalid urn {input:?}: namespace has {ch:?} at column {column}; allowed are a-z 0-9 _ . -"
    )]
    NamespaceChar {
        /// The rejected input (cut if very long).
        input: String,
        /// The first offending character.
        ch: char,
        /// Its 1-based column in the input.
        column: usize,
    },
    /// The id part is empty.
    #[error("invalid urn {input:?}: id at column {column} is empty; it needs 1 to 256 characters")]
    EmptyId {
        /// The rejected input (cut if very long).
        input: String,
        /// 1-based column where the id should start.
        column: usize,
    },
    /// The id part is longer than [`ID_LEN_MAX`].
    #[error(
        "invalid urn {input:?}: id at column {column} is {len} characters long; the maximum is 256"
    )]
    IdTooLong {
        /// The rejected input (cut if very long).
        input: String,
        /// 1-based column where the id starts.
        column: usize,
        /// Length of the id in characters.
        len: usize,
    },
    /// The id contains a character outside the RFC 3986 unreserved set.
    #[error(
        "invalid urn {input:?}: id has {ch:?} at column {column}; allowed are A-Z a-z 0-9 - . _ ~"
    )]
    IdChar {
        /// The rejected input (cut if very long).
        input: String,
        /// The first offending character.
        ch: char,
        /// Its 1-based column in the input.
        column: usize,
    },
}

impl UrnError {
    /// The stable problem+json `code` for every URN error.
    pub fn code(&self) -> &'static str {
        "invalid_urn"
    }
}

/// A validated resource name. Equality, order and hash are those of the canonical string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Urn {
    // Field order matters: the derived `Ord` compares `text` first, and the other fields are
    // functions of `text`, so the order is exactly the string order.
    text: String,
    model: Model,
    /// Byte offset of the `:` between namespace and id.
    id_colon: usize,
}

impl Urn {
    /// Parses `urn:themis:{model}:{namespace}:{id}`, rejecting anything else with an error that
    /// says what is wrong and where.
    pub fn parse(input: &str) -> Result<Urn, UrnError> {
        Self::parse_as(input, true)
    }

    /// Parses a URN read back from the log: the grammar as every version wrote it, so an entry
    /// an older version accepted with the namespace `.` or `..` (refused since) still decodes.
    pub fn parse_logged(input: &str) -> Result<Urn, UrnError> {
        Self::parse_as(input, false)
    }

    fn parse_as(input: &str, strict: bool) -> Result<Urn, UrnError> {
        let Some(rest) = input.strip_prefix(URN_PREFIX) else {
            return Err(UrnError::MissingPrefix { input: echo(input) });
        };
        let mut parts = rest.splitn(3, ':');
        let (Some(model), Some(namespace), Some(id)) = (parts.next(), parts.next(), parts.next())
        else {
            let found = rest.split(':').count();
            return Err(UrnError::TooFewParts {
                input: echo(input),
                found,
            });
        };
        let model_at = URN_PREFIX.len();
        let model = parse_model(input, model, model_at)?;
        let namespace_at = model_at + model.as_str().len() + 1;
        check_namespace(input, namespace, namespace_at, strict)?;
        let id_at = namespace_at + namespace.len() + 1;
        check_id(input, id, id_at)?;
        Ok(Urn {
            text: input.to_owned(),
            model,
            id_colon: id_at - 1,
        })
    }

    /// Builds a URN from its parts, with the same checks (and columns in the composed string) as
    /// [`Urn::parse`].
    pub fn new(model: Model, namespace: &str, id: &str) -> Result<Urn, UrnError> {
        let text = format!("{URN_PREFIX}{model}:{namespace}:{id}");
        let namespace_at = URN_PREFIX.len() + model.as_str().len() + 1;
        // Each part is checked on its own, so a `:` inside the namespace is reported as a namespace
        // character rather than shifting the split.
        check_namespace(&text, namespace, namespace_at, true)?;
        let id_at = namespace_at + namespace.len() + 1;
        check_id(&text, id, id_at)?;
        Ok(Urn {
            text,
            model,
            id_colon: id_at - 1,
        })
    }

    /// The data model.
    pub fn model(&self) -> Model {
        self.model
    }

    /// The namespace: 1 to 64 characters of `[a-z0-9_.-]`.
    pub fn namespace(&self) -> &str {
        let start = URN_PREFIX.len() + self.model.as_str().len() + 1;
        &self.text[start..self.id_colon]
    }

    /// The id: 1 to 256 RFC 3986 unreserved characters.
    pub fn id(&self) -> &str {
        &self.text[self.id_colon + 1..]
    }

    /// The canonical string, `urn:themis:{model}:{namespace}:{id}`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Urn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Urn {
    type Err = UrnError;

    fn from_str(s: &str) -> Result<Urn, UrnError> {
        Urn::parse(s)
    }
}

impl Serialize for Urn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Urn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Urn, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Urn::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn parse_model(input: &str, model: &str, at: usize) -> Result<Model, UrnError> {
    Model::ALL
        .into_iter()
        .find(|m| m.as_str() == model)
        .ok_or_else(|| UrnError::UnknownModel {
            input: echo(input),
            model: echo(model),
            column: at + 1,
        })
}

/// Checks a namespace that starts at byte offset `at` of `input` (`strict`: `.` and `..` are
/// refused, as for every URN but those read back from the log).
fn check_namespace(input: &str, namespace: &str, at: usize, strict: bool) -> Result<(), UrnError> {
    if namespace.is_empty() {
        return Err(UrnError::EmptyNamespace {
            input: echo(input),
            column: at + 1,
        });
    }
    if let Some((offset, ch)) = namespace
        .char_indices()
        .find(|&(_, c)| !is_namespace_char(c))
    {
        // Every character before `offset` is ASCII, so the byte offset is also the column - 1.
        return Err(UrnError::NamespaceChar {
            input: echo(input),
            ch,
            column: at + offset + 1,
        });
    }
    if namespace.len() > NAMESPACE_LEN_MAX {
        return Err(UrnError::NamespaceTooLong {
            input: echo(input),
            column: at + 1,
            len: namespace.len(),
        });
    }
    if strict && (namespace == "." || namespace == "..") {
        return Err(UrnError::DotNamespace {
            input: echo(input),
            namespace: namespace.to_owned(),
            column: at + 1,
        });
    }
    Ok(())
}

/// The file name that stands for namespace `ns` in index directories: `ns` itself when it is a
/// plain name (1 to 64 characters of the namespace alphabet, not `.` or `..`), otherwise `%`
/// followed by the hex of its bytes, which no plain name starts with. So no namespace, whatever
/// an older version let into the log, names a parent directory, holds a separator or is empty,
/// and distinct namespaces get distinct file names.
pub fn namespace_file_name(ns: &str) -> String {
    let plain = !ns.is_empty()
        && ns.len() <= NAMESPACE_LEN_MAX
        && ns != "."
        && ns != ".."
        && ns.chars().all(is_namespace_char);
    if plain {
        return ns.to_owned();
    }
    let mut out = String::with_capacity(1 + 2 * ns.len());
    out.push('%');
    for b in ns.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Checks an id that starts at byte offset `at` of `input`.
fn check_id(input: &str, id: &str, at: usize) -> Result<(), UrnError> {
    if id.is_empty() {
        return Err(UrnError::EmptyId {
            input: echo(input),
            column: at + 1,
        });
    }
    if let Some((offset, ch)) = id.char_indices().find(|&(_, c)| !is_id_char(c)) {
        return Err(UrnError::IdChar {
            input: echo(input),
            ch,
            column: at + offset + 1,
        });
    }
    if id.len() > ID_LEN_MAX {
        return Err(UrnError::IdTooLong {
            input: echo(input),
            column: at + 1,
            len: id.len(),
        });
    }
    Ok(())
}

fn is_namespace_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-')
}

fn is_id_char(c: char) -> bool {
    matches!(c, 'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '.' | '_' | '~')
}

/// The input as repeated in an error message: verbatim up to [`ECHO_LEN_MAX`] bytes, else cut at a
/// character boundary and marked.
fn echo(input: &str) -> String {
    if input.len() <= ECHO_LEN_MAX {
        return input.to_owned();
    }
    let mut end = ECHO_LEN_MAX;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &input[..end])
}

#[cfg(test)]
mod tests;
