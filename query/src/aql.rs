//! AQL, the query language of the ancestor and of ArangoDB, over every view at one token
//! (`docs/AQL.md`): lexer, parser, values, functions, the evaluator and DataFusion plans.
//!
//! What the parser accepts: `FOR … IN`, `FILTER`, `LET`, `SORT … ASC|DESC`, `LIMIT n` and
//! `LIMIT offset, n`, `COLLECT … AGGREGATE … INTO … WITH COUNT INTO`, `RETURN [DISTINCT]`, in any
//! order ending with `RETURN`; subqueries `(FOR … RETURN …)`; graph traversals
//! `FOR v, e, p IN min..max OUTBOUND|INBOUND|ANY start GRAPH 'g'` (or edge labels instead of
//! `GRAPH`) and `FOR v, e IN OUTBOUND SHORTEST_PATH a TO b GRAPH 'g'`; bind parameters `@name`
//! and `@@collection`; `//` and `/* */` comments; indexing `a[0]` and expansion `a[*].b`;
//! objects with computed keys and the `{name}` shorthand; the usual operators (`IN`, `NOT IN`,
//! `LIKE`, `=~`, `..`, `?:`). Every error names line, column and what was expected; no
//! character is ever skipped; nesting deeper than 40 levels and expressions higher than 1,000 levels
//! (chains of operators count) are errors, not stack overflows.

pub mod eval;
pub mod functions;
pub mod lexer;
pub mod parser;
pub mod plan;
pub mod value;

pub use eval::{Evaluator, Outcome};
pub use parser::{Expr, HEIGHT_MAX, Op, Query, Source, parse};

/// A query that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("AQL syntax error at line {line}, column {column}: {message}")]
pub struct SyntaxError {
    /// Line (from 1).
    pub line: usize,
    /// Column (from 1, in characters).
    pub column: usize,
    /// What was expected and what was found.
    pub message: String,
}

#[cfg(test)]
mod tests;
