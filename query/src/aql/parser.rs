//! AQL's syntax tree and its recursive-descent parser. Clauses come in any order ArangoDB
//! allows (a query is a sequence of operations ending in `RETURN`); every error names the line,
//! the column and what was expected.

use super::SyntaxError;
use super::lexer::{Tok, Token, tokens};

/// A query or subquery: operations, then `RETURN`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The operations, in order.
    pub ops: Vec<Op>,
    /// `RETURN DISTINCT`.
    pub distinct: bool,
    /// What each row returns.
    pub ret: Expr,
}

/// Graph directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `OUTBOUND`.
    Outbound,
    /// `INBOUND`.
    Inbound,
    /// `ANY`.
    Any,
}

/// What a `FOR` iterates over.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A collection (a name or `@@bind`) or any expression yielding an array.
    Expr(Expr),
    /// `min..max OUTBOUND start GRAPH g` (or edge labels instead of `GRAPH`).
    Traversal {
        /// Depths.
        min: Expr,
        /// Depths.
        max: Expr,
        /// Direction.
        direction: Direction,
        /// Start vertex.
        start: Expr,
        /// `GRAPH 'g'`, or the edge labels listed.
        graph: Option<Expr>,
        /// Edge labels (collections in ArangoDB).
        labels: Vec<String>,
    },
    /// `OUTBOUND SHORTEST_PATH from TO to GRAPH g`.
    ShortestPath {
        /// Direction.
        direction: Direction,
        /// From.
        from: Expr,
        /// To.
        to: Expr,
        /// `GRAPH 'g'`.
        graph: Option<Expr>,
        /// Edge labels.
        labels: Vec<String>,
        /// `OPTIONS {weightAttribute: 'w'}`.
        options: Option<Expr>,
    },
}

/// One operation of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `FOR v[, e[, p]] IN source`.
    For {
        /// Variables.
        vars: Vec<String>,
        /// Source.
        source: Source,
    },
    /// `FILTER expr`.
    Filter(Expr),
    /// `LET name = expr`.
    Let(String, Expr),
    /// `SORT expr [ASC|DESC], ...` (true: ascending).
    Sort(Vec<(Expr, bool)>),
    /// `LIMIT [offset,] count`.
    Limit {
        /// Offset.
        offset: Option<Expr>,
        /// Count.
        count: Expr,
    },
    /// `COLLECT g = e, ... [AGGREGATE a = f(x), ...] [INTO v [= expr | KEEP a, ...]]
    /// [WITH COUNT INTO n]`.
    Collect {
        /// Groups.
        groups: Vec<(String, Expr)>,
        /// Aggregates.
        aggregates: Vec<(String, Expr)>,
        /// `INTO v`.
        into: Option<String>,
        /// `INTO v = expr`: what each member adds to `v` (else its variables).
        into_expr: Option<Expr>,
        /// `INTO v KEEP a, b`: only these variables of each member.
        keep: Vec<String>,
        /// `WITH COUNT INTO n`.
        count_into: Option<String>,
    },
}

impl Op {
    /// The expressions the operation holds (not their parts), in order.
    pub fn exprs(&self) -> Vec<&Expr> {
        match self {
            Op::For { source, .. } => match source {
                Source::Expr(e) => vec![e],
                Source::Traversal {
                    min,
                    max,
                    start,
                    graph,
                    ..
                } => [min, max, start].into_iter().chain(graph).collect(),
                Source::ShortestPath {
                    from,
                    to,
                    graph,
                    options,
                    ..
                } => [from, to].into_iter().chain(graph).chain(options).collect(),
            },
            Op::Filter(e) | Op::Let(_, e) => vec![e],
            Op::Sort(keys) => keys.iter().map(|(e, _)| e).collect(),
            Op::Limit { offset, count } => offset.iter().chain([count]).collect(),
            Op::Collect {
                groups,
                aggregates,
                into_expr,
                ..
            } => groups
                .iter()
                .chain(aggregates)
                .map(|(_, e)| e)
                .chain(into_expr)
                .collect(),
        }
    }
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `OR`, `||`.
    Or,
    /// `AND`, `&&`.
    And,
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `IN`.
    In,
    /// `NOT IN`.
    NotIn,
    /// `LIKE`.
    Like,
    /// `NOT LIKE`.
    NotLike,
    /// `=~`.
    Regex,
    /// `!~`.
    NotRegex,
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/`.
    Div,
    /// `%`.
    Mod,
    /// `..`.
    Range,
}

/// Expressions.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// A string.
    Str(String),
    /// A variable or collection name.
    Name(String),
    /// `@name`.
    Bind(String),
    /// `@@name`.
    CollectionBind(String),
    /// `[a, b]`.
    Array(Vec<Expr>),
    /// `{k: v}` (computed keys are expressions).
    Object(Vec<(Expr, Expr)>),
    /// `x.name`.
    Attr(Box<Expr>, String),
    /// `x[i]`.
    Index(Box<Expr>, Box<Expr>),
    /// `x[*]` then the rest applied to every element (`x[*].a` is `Expand(x, .a)`).
    Expand(Box<Expr>, Box<Expr>),
    /// The current element inside an expansion.
    Current,
    /// `NAME(args)` (names upper-cased).
    Call(String, Vec<Expr>),
    /// `NOT x`, `!x`.
    Not(Box<Expr>),
    /// `-x`.
    Neg(Box<Expr>),
    /// Binary operations.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `c ? a : b`.
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `(FOR ... RETURN ...)`.
    Subquery(Box<Query>),
}

/// Parses one query.
pub fn parse(text: &str) -> Result<Query, SyntaxError> {
    parse_with(text, None)
}

/// Checks a call: its (upper-cased) name and number of arguments; `Err` says what is wrong.
pub type CallCheck = fn(&str, usize) -> Result<(), String>;

/// Parses one query, checking every function call with `check` (an unknown function or a
/// wrong number of arguments is an error at the function's name).
pub fn parse_with(text: &str, check: Option<CallCheck>) -> Result<Query, SyntaxError> {
    let mut p = Parser {
        toks: tokens(text)?,
        at: 0,
        depth: 0,
        links: 0,
        check,
    };
    let q = p.query()?;
    p.expect_eof()?;
    Ok(q)
}

/// Deepest nesting of expressions and subqueries (the parser recurses once per level).
const DEPTH_MAX: usize = 40;

/// Highest expression tree: nesting plus chains of operators, attribute accesses and indexes
/// (`1 + 1 + ...`, `a.b.c...`), which the parser builds in loops but everything that walks a
/// query (the evaluator, plans, drop) recurses through once per level. SQLite's and DuckDB's
/// expression depth limit is the same.
pub const HEIGHT_MAX: usize = 1000;

const RESERVED: [&str; 30] = [
    "FOR",
    "IN",
    "FILTER",
    "LET",
    "SORT",
    "LIMIT",
    "RETURN",
    "COLLECT",
    "INTO",
    "WITH",
    "AGGREGATE",
    "DISTINCT",
    "ASC",
    "DESC",
    "AND",
    "OR",
    "NOT",
    "LIKE",
    "NULL",
    "TRUE",
    "FALSE",
    "OUTBOUND",
    "INBOUND",
    "ANY",
    "GRAPH",
    "SHORTEST_PATH",
    "INSERT",
    "UPDATE",
    "REMOVE",
    "REPLACE",
];

struct Parser {
    toks: Vec<Token>,
    at: usize,
    depth: usize,
    /// Links of the operator chains being parsed (see [`HEIGHT_MAX`]).
    links: usize,
    check: Option<CallCheck>,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.at.min(self.toks.len() - 1)]
    }

    fn peek_at(&self, k: usize) -> &Tok {
        &self.toks[(self.at + k).min(self.toks.len() - 1)].tok
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.at < self.toks.len() - 1 {
            self.at += 1;
        }
        t
    }

    fn fail<T>(&self, expected: &str) -> Result<T, SyntaxError> {
        let t = self.peek();
        Err(SyntaxError {
            line: t.line,
            column: t.column,
            message: format!("expected {expected}, found {}", t.tok.describe()),
        })
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn kw_at(&self, k: usize, kw: &str) -> bool {
        matches!(self.peek_at(k), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), SyntaxError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            self.fail(kw)
        }
    }

    fn is_sym(&self, s: &str) -> bool {
        matches!(&self.peek().tok, Tok::Sym(x) if *x == s)
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if self.is_sym(s) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), SyntaxError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            self.fail(&format!("`{s}`"))
        }
    }

    fn expect_eof(&mut self) -> Result<(), SyntaxError> {
        if self.peek().tok == Tok::Eof {
            Ok(())
        } else {
            self.fail("the end of the query")
        }
    }

    /// A variable name (not a reserved word).
    fn name(&mut self, what: &str) -> Result<String, SyntaxError> {
        match self.peek().tok.clone() {
            Tok::Ident(s) if !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&s)) => {
                self.next();
                Ok(s)
            }
            Tok::Quoted(s) => {
                self.next();
                Ok(s)
            }
            _ => self.fail(what),
        }
    }

    fn enter(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > DEPTH_MAX {
            return self.fail(&format!("at most {DEPTH_MAX} levels of nesting"));
        }
        self.check_height()
    }

    /// One more link of an operator chain: the tree grows a level. Chain functions restore
    /// `links` when they return (a sibling's chain does not stack on this one).
    fn link(&mut self) -> Result<(), SyntaxError> {
        self.links += 1;
        self.check_height()
    }

    fn check_height(&self) -> Result<(), SyntaxError> {
        if self.depth + self.links > HEIGHT_MAX {
            return self.fail(&format!(
                "an expression at most {HEIGHT_MAX} levels high (nesting and chained operators, attributes or indexes)"
            ));
        }
        Ok(())
    }

    fn query(&mut self) -> Result<Query, SyntaxError> {
        self.enter()?;
        let mut ops = Vec::new();
        loop {
            if self.eat_kw("RETURN") {
                let distinct = self.eat_kw("DISTINCT");
                let ret = self.expr()?;
                self.depth -= 1;
                return Ok(Query { ops, distinct, ret });
            }
            let op = if self.eat_kw("FOR") {
                self.for_op()?
            } else if self.eat_kw("FILTER") {
                Op::Filter(self.expr()?)
            } else if self.eat_kw("LET") {
                let name = self.name("a variable name after LET")?;
                self.expect_sym("=")?;
                Op::Let(name, self.expr()?)
            } else if self.eat_kw("SORT") {
                let mut keys = Vec::new();
                loop {
                    let e = self.expr()?;
                    let asc = if self.eat_kw("DESC") {
                        false
                    } else {
                        self.eat_kw("ASC");
                        true
                    };
                    keys.push((e, asc));
                    if !self.eat_sym(",") {
                        break;
                    }
                }
                Op::Sort(keys)
            } else if self.eat_kw("LIMIT") {
                let first = self.expr()?;
                if self.eat_sym(",") {
                    Op::Limit {
                        offset: Some(first),
                        count: self.expr()?,
                    }
                } else {
                    Op::Limit {
                        offset: None,
                        count: first,
                    }
                }
            } else if self.eat_kw("COLLECT") {
                self.collect()?
            } else {
                return self.fail(
                    "FOR, FILTER, LET, SORT, LIMIT, COLLECT or RETURN (a query ends with RETURN)",
                );
            };
            ops.push(op);
        }
    }

    fn direction(&mut self) -> Option<Direction> {
        let d = if self.is_kw("OUTBOUND") {
            Direction::Outbound
        } else if self.is_kw("INBOUND") {
            Direction::Inbound
        } else if self.is_kw("ANY") {
            Direction::Any
        } else {
            return None;
        };
        self.next();
        Some(d)
    }

    /// `GRAPH g` or a list of edge labels.
    fn graph_or_labels(&mut self) -> Result<(Option<Expr>, Vec<String>), SyntaxError> {
        if self.eat_kw("GRAPH") {
            return Ok((Some(self.primary()?), Vec::new()));
        }
        let mut labels = vec![self.label()?];
        while self.eat_sym(",") {
            labels.push(self.label()?);
        }
        Ok((None, labels))
    }

    fn label(&mut self) -> Result<String, SyntaxError> {
        match self.peek().tok.clone() {
            Tok::Str(s) | Tok::Quoted(s) => {
                self.next();
                Ok(s)
            }
            Tok::Ident(s) if !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&s)) => {
                self.next();
                Ok(s)
            }
            _ => self.fail("GRAPH 'name' or an edge label"),
        }
    }

    fn for_op(&mut self) -> Result<Op, SyntaxError> {
        let mut vars = vec![self.name("a variable name after FOR")?];
        while self.eat_sym(",") {
            if vars.len() == 3 {
                return self.fail("IN (FOR takes at most three variables: vertex, edge, path)");
            }
            vars.push(self.name("a variable name")?);
        }
        self.expect_kw("IN")?;
        // `OUTBOUND SHORTEST_PATH a TO b ...`
        if (self.is_kw("OUTBOUND") || self.is_kw("INBOUND") || self.is_kw("ANY"))
            && self.kw_at(1, "SHORTEST_PATH")
        {
            let direction = self.direction().expect("checked");
            self.next();
            let from = self.expr()?;
            self.expect_kw("TO")?;
            let to = self.expr()?;
            let (graph, labels) = self.graph_or_labels()?;
            let options = if self.eat_kw("OPTIONS") {
                Some(self.primary()?)
            } else {
                None
            };
            return Ok(Op::For {
                vars,
                source: Source::ShortestPath {
                    direction,
                    from,
                    to,
                    graph,
                    labels,
                    options,
                },
            });
        }
        // `min..max DIRECTION start ...` or `DIRECTION start ...` (depth 1..1).
        let save = self.at;
        let range = if self.direction().is_some() {
            self.at = save;
            None
        } else {
            let e = self.expr()?;
            if self.direction().is_some() {
                self.at -= 1;
                Some(e)
            } else {
                return Ok(Op::For {
                    vars,
                    source: Source::Expr(e),
                });
            }
        };
        let (min, max) = match range {
            None => (Expr::Int(1), Expr::Int(1)),
            Some(Expr::Binary(BinOp::Range, a, b)) => (*a, *b),
            Some(depth) => (depth.clone(), depth),
        };
        let direction = self.direction().expect("checked");
        let start = self.expr()?;
        let (graph, labels) = self.graph_or_labels()?;
        Ok(Op::For {
            vars,
            source: Source::Traversal {
                min,
                max,
                direction,
                start,
                graph,
                labels,
            },
        })
    }

    fn assignments(&mut self) -> Result<Vec<(String, Expr)>, SyntaxError> {
        let mut out = Vec::new();
        loop {
            let name = self.name("a variable name")?;
            self.expect_sym("=")?;
            out.push((name, self.expr()?));
            if !self.eat_sym(",") {
                return Ok(out);
            }
        }
    }

    fn collect(&mut self) -> Result<Op, SyntaxError> {
        let groups = if self.is_kw("AGGREGATE") || self.is_kw("WITH") || self.is_kw("INTO") {
            Vec::new()
        } else {
            self.assignments()?
        };
        let aggregates = if self.eat_kw("AGGREGATE") {
            self.assignments()?
        } else {
            Vec::new()
        };
        let (mut into_expr, mut keep) = (None, Vec::new());
        let into = if self.eat_kw("INTO") {
            let name = self.name("a variable name after INTO")?;
            if self.eat_sym("=") {
                into_expr = Some(self.expr()?);
            } else if self.eat_kw("KEEP") {
                keep.push(self.name("a variable name after KEEP")?);
                while self.eat_sym(",") {
                    keep.push(self.name("a variable name")?);
                }
            }
            Some(name)
        } else {
            None
        };
        let count_into = if self.eat_kw("WITH") {
            self.expect_kw("COUNT")?;
            self.expect_kw("INTO")?;
            Some(self.name("a variable name after WITH COUNT INTO")?)
        } else {
            None
        };
        Ok(Op::Collect {
            groups,
            aggregates,
            into,
            into_expr,
            keep,
            count_into,
        })
    }

    fn expr(&mut self) -> Result<Expr, SyntaxError> {
        self.enter()?;
        let e = self.ternary();
        self.depth -= 1;
        e
    }

    fn ternary(&mut self) -> Result<Expr, SyntaxError> {
        let cond = self.or()?;
        if self.eat_sym("?") {
            let a = self.expr()?;
            self.expect_sym(":")?;
            let b = self.expr()?;
            return Ok(Expr::Ternary(Box::new(cond), Box::new(a), Box::new(b)));
        }
        Ok(cond)
    }

    fn or(&mut self) -> Result<Expr, SyntaxError> {
        let mark = self.links;
        let mut left = self.and()?;
        while self.eat_kw("OR") || self.eat_sym("||") {
            self.link()?;
            left = Expr::Binary(BinOp::Or, Box::new(left), Box::new(self.and()?));
        }
        self.links = mark;
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SyntaxError> {
        let mark = self.links;
        let mut left = self.not()?;
        while self.eat_kw("AND") || self.eat_sym("&&") {
            self.link()?;
            left = Expr::Binary(BinOp::And, Box::new(left), Box::new(self.not()?));
        }
        self.links = mark;
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, SyntaxError> {
        if self.is_kw("NOT") && !self.kw_at(1, "IN") && !self.kw_at(1, "LIKE") {
            self.next();
            self.enter()?;
            let inner = self.not();
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, SyntaxError> {
        let left = self.range()?;
        let op = if self.eat_sym("==") {
            BinOp::Eq
        } else if self.eat_sym("!=") {
            BinOp::Ne
        } else if self.eat_sym("<=") {
            BinOp::Le
        } else if self.eat_sym(">=") {
            BinOp::Ge
        } else if self.eat_sym("<") {
            BinOp::Lt
        } else if self.eat_sym(">") {
            BinOp::Gt
        } else if self.eat_sym("=~") {
            BinOp::Regex
        } else if self.eat_sym("!~") {
            BinOp::NotRegex
        } else if self.eat_kw("IN") {
            BinOp::In
        } else if self.eat_kw("LIKE") {
            BinOp::Like
        } else if self.is_kw("NOT") && self.kw_at(1, "IN") {
            self.next();
            self.next();
            BinOp::NotIn
        } else if self.is_kw("NOT") && self.kw_at(1, "LIKE") {
            self.next();
            self.next();
            BinOp::NotLike
        } else {
            return Ok(left);
        };
        Ok(Expr::Binary(op, Box::new(left), Box::new(self.range()?)))
    }

    fn range(&mut self) -> Result<Expr, SyntaxError> {
        let left = self.additive()?;
        if self.eat_sym("..") {
            return Ok(Expr::Binary(
                BinOp::Range,
                Box::new(left),
                Box::new(self.additive()?),
            ));
        }
        Ok(left)
    }

    fn additive(&mut self) -> Result<Expr, SyntaxError> {
        let mark = self.links;
        let mut left = self.multiplicative()?;
        loop {
            let op = if self.eat_sym("+") {
                BinOp::Add
            } else if self.eat_sym("-") {
                BinOp::Sub
            } else {
                self.links = mark;
                return Ok(left);
            };
            self.link()?;
            left = Expr::Binary(op, Box::new(left), Box::new(self.multiplicative()?));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, SyntaxError> {
        let mark = self.links;
        let mut left = self.unary()?;
        loop {
            let op = if self.eat_sym("*") {
                BinOp::Mul
            } else if self.eat_sym("/") {
                BinOp::Div
            } else if self.eat_sym("%") {
                BinOp::Mod
            } else {
                self.links = mark;
                return Ok(left);
            };
            self.link()?;
            left = Expr::Binary(op, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        if self.eat_sym("-") {
            self.enter()?;
            let e = self.unary();
            self.depth -= 1;
            return Ok(match e? {
                Expr::Int(n) => Expr::Int(n.wrapping_neg()),
                Expr::Float(f) => Expr::Float(-f),
                other => Expr::Neg(Box::new(other)),
            });
        }
        if self.eat_sym("+") {
            self.enter()?;
            let e = self.unary();
            self.depth -= 1;
            return e;
        }
        if self.eat_sym("!") {
            self.enter()?;
            let e = self.unary();
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e?)));
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, SyntaxError> {
        let mark = self.links;
        let mut e = self.primary()?;
        loop {
            if self.eat_sym(".") {
                self.link()?;
                e = Expr::Attr(Box::new(e), self.attribute()?);
            } else if self.eat_sym("[*]") {
                self.link()?;
                // The rest of the chain applies to each element.
                let mut rest = Expr::Current;
                loop {
                    if self.eat_sym(".") {
                        self.link()?;
                        rest = Expr::Attr(Box::new(rest), self.attribute()?);
                    } else if self.is_sym("[") {
                        self.next();
                        self.link()?;
                        let i = self.expr()?;
                        self.expect_sym("]")?;
                        rest = Expr::Index(Box::new(rest), Box::new(i));
                    } else {
                        break;
                    }
                }
                e = Expr::Expand(Box::new(e), Box::new(rest));
            } else if self.eat_sym("[") {
                self.link()?;
                let i = self.expr()?;
                self.expect_sym("]")?;
                e = Expr::Index(Box::new(e), Box::new(i));
            } else {
                self.links = mark;
                return Ok(e);
            }
        }
    }

    fn attribute(&mut self) -> Result<String, SyntaxError> {
        match self.peek().tok.clone() {
            Tok::Ident(s) | Tok::Quoted(s) => {
                self.next();
                Ok(s)
            }
            Tok::Bind(s) => {
                self.next();
                Ok(format!("@{s}"))
            }
            _ => self.fail("an attribute name after `.`"),
        }
    }

    fn primary(&mut self) -> Result<Expr, SyntaxError> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Int(n) => {
                self.next();
                Ok(Expr::Int(n))
            }
            Tok::Float(f) => {
                self.next();
                Ok(Expr::Float(f))
            }
            Tok::Str(s) => {
                self.next();
                Ok(Expr::Str(s))
            }
            Tok::Bind(s) => {
                self.next();
                Ok(Expr::Bind(s))
            }
            Tok::CollectionBind(s) => {
                self.next();
                Ok(Expr::CollectionBind(s))
            }
            Tok::Quoted(s) => {
                self.next();
                Ok(Expr::Name(s))
            }
            Tok::Sym("(") => {
                self.next();
                let e = if self.is_kw("FOR") || self.is_kw("LET") || self.is_kw("RETURN") {
                    Expr::Subquery(Box::new(self.query()?))
                } else {
                    self.expr()?
                };
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Sym("[") => {
                self.next();
                let mut items = Vec::new();
                if !self.eat_sym("]") {
                    loop {
                        items.push(self.expr()?);
                        if self.eat_sym("]") {
                            break;
                        }
                        self.expect_sym(",")?;
                        if self.eat_sym("]") {
                            break; // trailing comma
                        }
                    }
                }
                Ok(Expr::Array(items))
            }
            Tok::Sym("{") => {
                self.next();
                let mut members = Vec::new();
                if !self.eat_sym("}") {
                    loop {
                        members.push(self.member()?);
                        if self.eat_sym("}") {
                            break;
                        }
                        self.expect_sym(",")?;
                        if self.eat_sym("}") {
                            break;
                        }
                    }
                }
                Ok(Expr::Object(members))
            }
            Tok::Ident(ref s) => {
                let upper = s.to_ascii_uppercase();
                match upper.as_str() {
                    "NULL" => {
                        self.next();
                        return Ok(Expr::Null);
                    }
                    "TRUE" | "FALSE" => {
                        self.next();
                        return Ok(Expr::Bool(upper == "TRUE"));
                    }
                    _ => {}
                }
                if matches!(self.peek_at(1), Tok::Sym("(")) {
                    let (line, column) = (t.line, t.column);
                    self.next();
                    self.next();
                    let mut args = Vec::new();
                    if !self.eat_sym(")") {
                        loop {
                            // A subquery as the only argument needs no parentheses of its
                            // own: `LENGTH(FOR x IN c RETURN x)`.
                            if args.is_empty() && (self.is_kw("FOR") || self.is_kw("LET")) {
                                args.push(Expr::Subquery(Box::new(self.query()?)));
                                self.expect_sym(")")?;
                                break;
                            }
                            args.push(self.expr()?);
                            if self.eat_sym(")") {
                                break;
                            }
                            self.expect_sym(",")?;
                        }
                    }
                    if let Some(check) = self.check
                        && let Err(message) = check(&upper, args.len())
                    {
                        return Err(SyntaxError {
                            line,
                            column,
                            message,
                        });
                    }
                    return Ok(Expr::Call(upper, args));
                }
                Ok(Expr::Name(self.name("an expression")?))
            }
            _ => self.fail("an expression"),
        }
    }

    /// `key: value`, `"key": value`, `[expr]: value`, `@bind: value`, or the shorthand `name`.
    fn member(&mut self) -> Result<(Expr, Expr), SyntaxError> {
        let t = self.peek().clone();
        let key = match t.tok {
            Tok::Ident(s) | Tok::Quoted(s) => {
                self.next();
                if !self.is_sym(":") {
                    // Shorthand `{name}` is `{name: name}`.
                    return Ok((Expr::Str(s.clone()), Expr::Name(s)));
                }
                Expr::Str(s)
            }
            Tok::Str(s) => {
                self.next();
                Expr::Str(s)
            }
            Tok::Bind(s) => {
                self.next();
                Expr::Bind(s)
            }
            Tok::Sym("[") => {
                self.next();
                let e = self.expr()?;
                self.expect_sym("]")?;
                e
            }
            _ => return self.fail("an object key (a name, a string, @param or [expression])"),
        };
        self.expect_sym(":")?;
        Ok((key, self.expr()?))
    }
}
