//! AQL evaluation: rows of variable bindings flow through a query's operations one after
//! another, over one [`ViewSnapshot`] (one read of the document, relational, graph and
//! time-series views), so every model a query touches is read at one token.
//!
//! Collections: `FOR d IN users` reads the document namespace `users`, or the relational one
//! when only that exists; `document.users` / `relational.users` say which. Documents and rows
//! appear as their JSON with `_key` (the URN's id), `_id` (`namespace/key`), `_urn` and `_rev`.
//! Graph vertices look the same (`_id` is `graph-namespace/key`); edges are
//! `{_from, _to, label, ...properties}`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};
use themis_log::{Model, Token, Urn};
use themis_materializers::graph::{self, Direction as GDir, PathSearch, Traversal};
use themis_materializers::{KnnSearch, TextSearch, ViewSnapshot, timeseries};

use super::functions;
use super::parser::{BinOp, Direction, Expr, Op, Query, Source};
use super::value::{
    compare, compare_all, equal, key, like_regex, num, to_number, to_string, truthy, type_name,
};

/// Most values a range (`1..n`, `RANGE()`) may make.
pub const RANGE_MAX: u64 = 10_000_000;

/// About how many bytes `v` takes in memory: 32 a value, plus the bytes of strings and
/// member names. Counts up to a little past `stop`, then stops.
pub fn size_of(v: &Value, stop: usize) -> usize {
    let mut total = 0usize;
    let mut pending = vec![v];
    while let Some(v) = pending.pop() {
        total += 32;
        match v {
            Value::String(s) => total += s.len(),
            Value::Array(items) => pending.extend(items),
            Value::Object(members) => {
                for (k, v) in members {
                    total += k.len();
                    pending.push(v);
                }
            }
            _ => {}
        }
        if total > stop {
            break;
        }
    }
    total
}

fn scope_size(row: &Scope, stop: usize) -> usize {
    let mut total = 0usize;
    for (k, v) in row {
        total += k.len() + size_of(v, stop.saturating_sub(total));
        if total > stop {
            break;
        }
    }
    total
}

/// Variables of one row.
pub type Scope = BTreeMap<String, Value>;

/// A collection's documents, read once per query.
type Scanned = std::rc::Rc<Vec<Value>>;

/// Why evaluation stopped.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A name, parameter or collection that does not resolve; a value of the wrong kind.
    #[error("{0}")]
    Invalid(String),
    /// More rows than allowed.
    #[error("the query makes more than {0} rows; add a FILTER or LIMIT")]
    TooLarge(usize),
    /// A value over [`Limits::value_bytes_max`], or rows over [`Limits::rows_bytes_max`].
    #[error("{0}")]
    ValueTooLarge(String),
    /// The collections a query reads hold more than [`Limits::scan_bytes_max`] as values.
    #[error("{0}")]
    MemoryExhausted(String),
    /// Cancelled (the deadline passed).
    #[error("cancelled")]
    Cancelled,
    /// A plan over tables failed to build or to run.
    #[error("{0}")]
    Failed(String),
    /// A view could not be read, or refused the request (an unknown namespace, say).
    #[error(transparent)]
    View(themis_materializers::Error),
}

type Result<T> = std::result::Result<T, EvalError>;

/// What one query may hold, in bytes as [`size_of`] counts them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most rows an operation may make.
    pub rows_max: usize,
    /// Most bytes one value a function or a literal builds may take.
    pub value_bytes_max: usize,
    /// Most bytes the rows one operation (`FOR`, `LET`, `RETURN`) makes may take together:
    /// values are copied into every row, so `FOR i IN 1..1000000 LET b = @big` would hold a
    /// million copies.
    pub rows_bytes_max: usize,
    /// Most bytes the collections one query reads row by row may take as values (the
    /// evaluator keeps each collection it reads; plans over tables do not).
    pub scan_bytes_max: usize,
}

impl Limits {
    /// `Err` when `bytes` is over the value bound for the value `what` builds.
    fn value_fits(&self, bytes: usize, what: impl FnOnce() -> String) -> Result<()> {
        if bytes > self.value_bytes_max {
            return Err(EvalError::ValueTooLarge(format!(
                "{} would build a value of more than {} bytes",
                what(),
                self.value_bytes_max
            )));
        }
        Ok(())
    }

    /// `Err` when the rows an operation made take more than the rows bound.
    fn rows_fit(&self, bytes: usize, what: &str) -> Result<()> {
        if bytes > self.rows_bytes_max {
            return Err(EvalError::ValueTooLarge(format!(
                "the rows of {what} take more than {} bytes; add a FILTER or LIMIT, or return \
                 less of each row",
                self.rows_bytes_max
            )));
        }
        Ok(())
    }
}

/// An upper bound of the bytes function `name` builds from arguments `a`, for the
/// functions whose answer can be larger than one argument; 0 for the others (their
/// answer is measured after the call).
pub(super) fn estimate(name: &str, a: &[Value], stop: usize) -> usize {
    let size = |v: &Value| size_of(v, stop);
    let len = |i: usize| a.get(i).map_or(0, |v| to_string_len(v, stop));
    // The shortest text argument `i` can match: its length for a string or another scalar;
    // 1 for a list or an object of searches (any one of them may be that short).
    let shortest = |i: usize| match a.get(i) {
        Some(Value::Array(_) | Value::Object(_)) | None => 1,
        Some(v) => to_string_len(v, stop).max(1),
    };
    match name {
        "CONCAT" | "PUSH" | "APPEND" | "FLATTEN" | "UNION" | "UNION_DISTINCT" | "MERGE" | "ZIP"
        | "INTERSECTION" | "MINUS" => a.iter().map(size).sum(),
        "CONCAT_SEPARATOR" => {
            let parts: usize = a
                .iter()
                .skip(1)
                .map(|v| v.as_array().map_or(1, Vec::len))
                .sum();
            a.iter()
                .map(size)
                .sum::<usize>()
                .saturating_add(len(0).saturating_mul(parts))
        }
        "SUBSTITUTE" => {
            let s = len(0);
            s.saturating_add((s / shortest(1) + 1).saturating_mul(len(2)))
        }
        // Without a separator, the string itself in a list.
        "SPLIT" if a.get(1).is_none_or(Value::is_null) => len(0).saturating_add(40),
        // An element (32 bytes or more) for each piece at worst.
        "SPLIT" => {
            let s = len(0);
            s.saturating_add((s / shortest(1) + 1).saturating_mul(40))
        }
        _ => 0,
    }
}

/// The length of `v` as a string (at least; without building it for strings, about it for
/// lists and objects).
fn to_string_len(v: &Value, stop: usize) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Null => 0,
        Value::Bool(_) | Value::Number(_) => v.to_string().len(),
        v => size_of(v, stop),
    }
}

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(EvalError::Invalid(msg.into()))
}

fn view_error(e: themis_materializers::Error) -> EvalError {
    match e {
        themis_materializers::Error::InvalidSearch(m) => EvalError::Invalid(m),
        e => EvalError::View(e),
    }
}

/// The rows a query returned and the token they reflect.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// What `RETURN` made, in order.
    pub rows: Vec<Value>,
    /// How many of the query's operations ran as a DataFusion plan (0: all interpreted).
    pub planned: usize,
    /// The lowest watermark among everything read, per shard.
    pub token: Token,
}

/// Evaluates queries over one snapshot.
pub struct Evaluator<'a> {
    snap: &'a ViewSnapshot<'a>,
    params: &'a Map<String, Value>,
    cancel: &'a AtomicBool,
    limits: Limits,
    steps: std::cell::Cell<u64>,
    /// Tokens of the searches run (their indexes are read apart from the snapshot).
    token: RefCell<Option<Token>>,
    regexes: RefCell<BTreeMap<String, regex::Regex>>,
    /// Per collection, its documents (a nested FOR reads a collection once).
    scans: RefCell<BTreeMap<(Model, String), Scanned>>,
    /// Bytes the collections read so far take as values (bounded by
    /// [`Limits::scan_bytes_max`]).
    scanned: std::cell::Cell<usize>,
    /// Per bare collection name, the namespace it resolved to.
    resolved: RefCell<BTreeMap<String, Option<(Model, String)>>>,
    /// Runs the leading part of a query over tables as a DataFusion plan, when set.
    runner: Option<&'a dyn super::plan::Runner>,
}

impl std::fmt::Debug for Evaluator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator").finish_non_exhaustive()
    }
}

impl<'a> Evaluator<'a> {
    /// An evaluator over `snap` with bind parameters `params` (names without `@`; collection
    /// parameters keep one `@`: `{"@coll": "users"}`), stopping when `cancel` is set or a
    /// bound of `limits` is passed.
    pub fn new(
        snap: &'a ViewSnapshot<'a>,
        params: &'a Map<String, Value>,
        cancel: &'a AtomicBool,
        limits: Limits,
    ) -> Self {
        Self {
            snap,
            params,
            cancel,
            limits,
            steps: std::cell::Cell::new(0),
            token: RefCell::new(None),
            regexes: RefCell::default(),
            scans: RefCell::default(),
            scanned: std::cell::Cell::new(0),
            resolved: RefCell::default(),
            runner: None,
        }
    }

    /// Runs the leading part of queries that read relational tables as DataFusion plans
    /// through `runner` (see [`super::plan`]); without one, everything is interpreted.
    pub fn with_runner(mut self, runner: &'a dyn super::plan::Runner) -> Self {
        self.runner = Some(runner);
        self
    }

    /// Runs `q`; `token` is the snapshot's.
    pub fn run(&self, q: &Query, token: Token) -> Result<Outcome> {
        self.check_params(q)?;
        let pushed = match self.runner {
            Some(runner) => super::plan::pushdown(self, runner, q)?,
            None => None,
        };
        let (rows, planned) = match pushed {
            Some(p) => (self.query_from(&p.rest, p.rows, &Scope::new())?, p.ops),
            None => (self.query(q, &Scope::new())?, 0),
        };
        let token = match self.token.borrow().as_ref() {
            None => token,
            Some(searched) => crate::search::meet(&token, searched),
        };
        Ok(Outcome {
            rows,
            planned,
            token,
        })
    }

    /// Notes the token a search read its index at.
    fn searched(&self, token: &Token) {
        let mut t = self.token.borrow_mut();
        *t = Some(match t.as_ref() {
            None => token.clone(),
            Some(before) => crate::search::meet(before, token),
        });
    }

    /// Every bind parameter the query uses is given, and every one given is used.
    fn check_params(&self, q: &Query) -> Result<()> {
        let mut used = std::collections::BTreeSet::new();
        walk_query(q, &mut |e| match e {
            Expr::Bind(n) => {
                used.insert(n.clone());
            }
            Expr::CollectionBind(n) => {
                used.insert(format!("@{n}"));
            }
            _ => {}
        });
        for u in &used {
            if !self.params.contains_key(u) {
                return invalid(format!(
                    "bind parameter @{u} is not given (params: {{\"{u}\": ...}})"
                ));
            }
        }
        for given in self.params.keys() {
            if !used.contains(given) {
                return invalid(format!(
                    "bind parameter @{given} is given but the query does not use it"
                ));
            }
        }
        Ok(())
    }

    fn step(&self, n: u64) -> Result<()> {
        let s = self.steps.get() + n;
        if s < 4096 {
            self.steps.set(s);
            return Ok(());
        }
        self.steps.set(0);
        if self.cancel.load(Ordering::Relaxed) {
            return Err(EvalError::Cancelled);
        }
        Ok(())
    }

    fn query(&self, q: &Query, outer: &Scope) -> Result<Vec<Value>> {
        self.query_from(q, vec![outer.clone()], outer)
    }

    /// Runs `q`'s operations over `rows` (made in scope `outer`), then its `RETURN`.
    fn query_from(&self, q: &Query, mut rows: Vec<Scope>, outer: &Scope) -> Result<Vec<Value>> {
        for op in &q.ops {
            rows = self.op(op, rows, outer)?;
        }
        let mut out = Vec::with_capacity(rows.len());
        let mut seen = std::collections::BTreeSet::new();
        let mut bytes = 0usize;
        for row in &rows {
            self.step(1)?;
            let v = self.eval(&q.ret, row, None)?;
            if q.distinct && !seen.insert(key(&v)) {
                continue;
            }
            bytes += size_of(&v, self.limits.rows_bytes_max);
            self.limits.rows_fit(bytes, "RETURN")?;
            out.push(v);
        }
        Ok(out)
    }

    fn op(&self, op: &Op, rows: Vec<Scope>, outer: &Scope) -> Result<Vec<Scope>> {
        match op {
            Op::For { vars, source } => {
                let mut out = Vec::new();
                let mut bytes = 0usize;
                for row in rows {
                    let items = self.source(source, vars, &row)?;
                    let shared = scope_size(&row, self.limits.rows_bytes_max);
                    for item in items {
                        self.step(1)?;
                        bytes += shared;
                        for v in &item {
                            bytes += size_of(v, self.limits.rows_bytes_max);
                        }
                        self.limits.rows_fit(bytes, "FOR")?;
                        let mut r = row.clone();
                        for (name, v) in vars.iter().zip(item) {
                            r.insert(name.clone(), v);
                        }
                        out.push(r);
                        if out.len() > self.limits.rows_max {
                            return Err(EvalError::TooLarge(self.limits.rows_max));
                        }
                    }
                }
                Ok(out)
            }
            Op::Filter(e) => {
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    self.step(1)?;
                    if truthy(&self.eval(e, &row, None)?) {
                        out.push(row);
                    }
                }
                Ok(out)
            }
            Op::Let(name, e) => {
                let mut out = Vec::with_capacity(rows.len());
                let mut bytes = 0usize;
                for mut row in rows {
                    self.step(1)?;
                    let v = self.eval(e, &row, None)?;
                    // What the rows held already was counted where it was made.
                    bytes += size_of(&v, self.limits.rows_bytes_max);
                    self.limits.rows_fit(bytes, "LET")?;
                    row.insert(name.clone(), v);
                    out.push(row);
                }
                Ok(out)
            }
            Op::Sort(keys) => {
                let mut keyed = Vec::with_capacity(rows.len());
                for row in rows {
                    self.step(1)?;
                    let k: Vec<Value> = keys
                        .iter()
                        .map(|(e, _)| self.eval(e, &row, None))
                        .collect::<Result<_>>()?;
                    keyed.push((k, row));
                }
                keyed.sort_by(|(a, _), (b, _)| {
                    for (i, (_, asc)) in keys.iter().enumerate() {
                        let o = compare(&a[i], &b[i]);
                        if o != std::cmp::Ordering::Equal {
                            return if *asc { o } else { o.reverse() };
                        }
                    }
                    std::cmp::Ordering::Equal
                });
                Ok(keyed.into_iter().map(|(_, r)| r).collect())
            }
            Op::Limit { offset, count } => {
                let number = |e: &Expr, what: &str| -> Result<usize> {
                    let v = self.eval(e, outer, None)?;
                    match v.as_f64() {
                        Some(f) if f >= 0.0 && f.fract() == 0.0 => Ok(f as usize),
                        _ => invalid(format!("LIMIT {what} must be a whole number >= 0, not {v}")),
                    }
                };
                let skip = offset
                    .as_ref()
                    .map(|o| number(o, "offset"))
                    .transpose()?
                    .unwrap_or(0);
                let take = number(count, "count")?;
                Ok(rows.into_iter().skip(skip).take(take).collect())
            }
            Op::Collect { .. } => self.collect(rows, outer, op),
        }
    }

    fn collect(&self, rows: Vec<Scope>, outer: &Scope, op: &Op) -> Result<Vec<Scope>> {
        let Op::Collect {
            groups,
            aggregates,
            into,
            into_expr,
            keep,
            count_into,
        } = op
        else {
            return invalid("not a COLLECT");
        };
        for k in keep {
            if !rows.iter().any(|r| r.contains_key(k)) && !rows.is_empty() {
                return invalid(format!("KEEP {k}: no such variable before COLLECT"));
            }
        }
        // Group key (canonical) -> (group values, rows).
        let mut buckets: BTreeMap<String, (Vec<Value>, Vec<Scope>)> = BTreeMap::new();
        for row in rows {
            self.step(1)?;
            let values: Vec<Value> = groups
                .iter()
                .map(|(_, e)| self.eval(e, &row, None))
                .collect::<Result<_>>()?;
            let k = key(&Value::Array(values.clone()));
            buckets
                .entry(k)
                .or_insert_with(|| (values, Vec::new()))
                .1
                .push(row);
        }
        if groups.is_empty() && buckets.is_empty() {
            buckets.insert(String::new(), (Vec::new(), Vec::new()));
        }
        let mut ordered: Vec<(Vec<Value>, Vec<Scope>)> = buckets.into_values().collect();
        ordered.sort_by(|a, b| compare_all(&a.0, &b.0));
        let mut out = Vec::with_capacity(ordered.len());
        for (values, members) in ordered {
            let mut r = outer.clone();
            for ((name, _), v) in groups.iter().zip(values) {
                r.insert(name.clone(), v);
            }
            for (name, agg) in aggregates {
                let v = self.aggregate(agg, &members)?;
                r.insert(name.clone(), v);
            }
            if let Some(name) = into {
                let items = match into_expr {
                    Some(e) => members
                        .iter()
                        .map(|m| self.eval(e, m, None))
                        .collect::<Result<_>>()?,
                    None => members
                        .iter()
                        .map(|m| {
                            Value::Object(
                                m.iter()
                                    .filter(|(k, _)| {
                                        !outer.contains_key(*k)
                                            && (keep.is_empty() || keep.contains(k))
                                    })
                                    .map(|(k, v)| (k.clone(), v.clone()))
                                    .collect(),
                            )
                        })
                        .collect(),
                };
                r.insert(name.clone(), Value::Array(items));
            }
            if let Some(name) = count_into {
                r.insert(name.clone(), Value::from(members.len()));
            }
            out.push(r);
        }
        Ok(out)
    }

    /// `AGGREGATE name = F(expr)`: `F` over the group's values of `expr` (`COUNT()` counts
    /// the rows).
    fn aggregate(&self, agg: &Expr, members: &[Scope]) -> Result<Value> {
        let Expr::Call(f, args) = agg else {
            return invalid("AGGREGATE expects a function call such as SUM(x) or COUNT()");
        };
        const AGGREGATES: [&str; 16] = [
            "COUNT",
            "LENGTH",
            "SUM",
            "MIN",
            "MAX",
            "AVG",
            "AVERAGE",
            "MEDIAN",
            "UNIQUE",
            "SORTED_UNIQUE",
            "COUNT_DISTINCT",
            "COUNT_UNIQUE",
            "VARIANCE",
            "STDDEV",
            "VARIANCE_POPULATION",
            "STDDEV_POPULATION",
        ];
        if !AGGREGATES.contains(&f.as_str()) && f != "PUSH" {
            return invalid(format!(
                "{f}() is not an aggregate (use one of {})",
                AGGREGATES.join(", ")
            ));
        }
        if args.is_empty() {
            return match f.as_str() {
                "COUNT" | "LENGTH" => Ok(Value::from(members.len())),
                _ => invalid(format!("{f}() needs an argument in AGGREGATE")),
            };
        }
        let mut values = Vec::with_capacity(members.len());
        for m in members {
            values.push(self.eval(&args[0], m, None)?);
        }
        let f = match f.as_str() {
            "COUNT" => "LENGTH",
            "PUSH" => return Ok(Value::Array(values)),
            f => f,
        };
        functions::call(f, &[Value::Array(values)]).map_err(EvalError::Invalid)
    }

    /// The items a `FOR` binds: one vector of values per item, in the order of `vars`.
    fn source(&self, source: &Source, vars: &[String], row: &Scope) -> Result<Vec<Vec<Value>>> {
        match source {
            Source::Expr(e) => {
                if vars.len() > 1 {
                    return invalid(format!(
                        "FOR {} IN ...: only a traversal binds more than one variable",
                        vars.join(", ")
                    ));
                }
                let items = match self.collection_of(e, row)? {
                    Some((model, ns)) => {
                        let docs = self.scan(model, &ns)?;
                        return Ok(docs.iter().map(|d| vec![d.clone()]).collect());
                    }
                    None => match self.eval(e, row, None)? {
                        Value::Array(items) => items,
                        v => {
                            return invalid(format!(
                                "FOR ... IN expects an array or a collection, not {}",
                                type_name(&v)
                            ));
                        }
                    },
                };
                Ok(items.into_iter().map(|v| vec![v]).collect())
            }
            Source::Traversal {
                min,
                max,
                direction,
                start,
                graph,
                labels,
            } => {
                if vars.len() > 3 {
                    return invalid(
                        "a traversal binds at most three variables (vertex, edge, path)",
                    );
                }
                let depth = |e: &Expr| -> Result<usize> {
                    let v = self.eval(e, row, None)?;
                    match v.as_f64() {
                        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= graph::DEPTH_MAX as f64 => {
                            Ok(f as usize)
                        }
                        _ => invalid(format!(
                            "a traversal depth must be a whole number from 0 to {}, not {v}",
                            graph::DEPTH_MAX
                        )),
                    }
                };
                let (lo, hi) = (depth(min)?, depth(max)?);
                if lo > hi {
                    return invalid(format!(
                        "traversal depths {lo}..{hi}: the first must not exceed the second"
                    ));
                }
                let g = self.graph_name(graph.as_ref(), row)?;
                let start = self.vertex_urn(&self.eval(start, row, None)?, g.as_deref())?;
                self.traverse(start, lo, hi, *direction, labels)
            }
            Source::ShortestPath {
                direction,
                from,
                to,
                graph,
                labels,
                options,
            } => {
                if vars.len() > 2 {
                    return invalid("a shortest path binds at most two variables (vertex, edge)");
                }
                let weight = match options {
                    None => None,
                    Some(e) => self.path_weight(&self.eval(e, row, None)?)?,
                };
                let g = self.graph_name(graph.as_ref(), row)?;
                let from = self.vertex_urn(&self.eval(from, row, None)?, g.as_deref())?;
                let to = self.vertex_urn(&self.eval(to, row, None)?, g.as_deref())?;
                let search = PathSearch {
                    from,
                    to,
                    direction: gdir(*direction),
                    labels: labels.clone(),
                    weight,
                };
                let found = self
                    .snap
                    .graph()
                    .shortest_path(&search)
                    .map_err(view_error)?;
                let Some(path) = found else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::new();
                for (i, (urn, data)) in path.vertices.iter().enumerate() {
                    let e = if i == 0 {
                        Value::Null
                    } else {
                        edge_value(&path.edges[i - 1])
                    };
                    out.push(vec![resource_value(urn, data.clone(), None), e]);
                }
                Ok(out)
            }
        }
    }

    fn traverse(
        &self,
        start: Urn,
        lo: usize,
        hi: usize,
        direction: Direction,
        labels: &[String],
    ) -> Result<Vec<Vec<Value>>> {
        // From depth 0, so every reached vertex's tree edge is known and paths can be built.
        let t = Traversal {
            start,
            min_depth: 0,
            max_depth: hi,
            direction: gdir(direction),
            labels: labels.to_vec(),
            limit: graph::RESULTS_MAX,
        };
        let found = self.snap.graph().traverse(&t).map_err(view_error)?;
        if found.truncated {
            return Err(EvalError::TooLarge(graph::RESULTS_MAX));
        }
        let mut by_urn: BTreeMap<&str, &graph::Reached> = BTreeMap::new();
        for r in &found.vertices {
            by_urn.insert(r.urn.as_str(), r);
        }
        let mut out = Vec::new();
        for r in &found.vertices {
            if r.depth < lo {
                continue;
            }
            self.step(1)?;
            let v = resource_value(&r.urn, r.data.clone(), None);
            let e = r.edge.as_ref().map_or(Value::Null, edge_value);
            let mut vertices = Vec::new();
            let mut edges = Vec::new();
            for (i, urn) in r.path.iter().enumerate() {
                let reached = by_urn.get(urn.as_str());
                let data = reached.map_or(Value::Null, |x| x.data.clone());
                vertices.push(resource_value(urn, data, None));
                if i > 0
                    && let Some(edge) = reached.and_then(|x| x.edge.as_ref())
                {
                    edges.push(edge_value(edge));
                }
            }
            let mut p = Map::new();
            p.insert("vertices".into(), Value::Array(vertices));
            p.insert("edges".into(), Value::Array(edges));
            out.push(vec![v, e, Value::Object(p)]);
        }
        Ok(out)
    }

    fn graph_name(&self, graph: Option<&Expr>, row: &Scope) -> Result<Option<String>> {
        graph
            .map(|g| match self.eval(g, row, None)? {
                Value::String(s) => Ok(s),
                v => invalid(format!(
                    "GRAPH expects a name (a string), not {}",
                    type_name(&v)
                )),
            })
            .transpose()
    }

    /// A vertex from a URN, `namespace/key`, a bare key (with `GRAPH 'namespace'`) or a
    /// vertex object.
    fn vertex_urn(&self, v: &Value, graph: Option<&str>) -> Result<Urn> {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Object(o) => match o.get("_urn").or_else(|| o.get("_id")) {
                Some(Value::String(s)) => s.clone(),
                _ => return invalid("a start vertex object needs _urn or _id"),
            },
            v => {
                return invalid(format!(
                    "a vertex is a string or an object, not {}",
                    type_name(v)
                ));
            }
        };
        let urn = if text.starts_with("urn:") {
            text.clone()
        } else if let Some((ns, key)) = text.split_once('/') {
            format!("urn:themis:graph:{ns}:{key}")
        } else if let Some(g) = graph {
            format!("urn:themis:graph:{g}:{text}")
        } else {
            return invalid(format!(
                "vertex {text:?}: give a URN, `namespace/key`, or GRAPH 'namespace'"
            ));
        };
        Urn::parse(&urn).map_err(|e| EvalError::Invalid(format!("vertex {text:?}: {e}")))
    }

    /// The collection a `FOR` source names, if it names one: a bare name that is no variable,
    /// `document.name` / `relational.name`, or `@@param`.
    pub(crate) fn collection_of(&self, e: &Expr, row: &Scope) -> Result<Option<(Model, String)>> {
        match e {
            Expr::Name(n) if !row.contains_key(n) => Ok(Some(self.resolve_collection(n)?)),
            Expr::Attr(base, ns) => match base.as_ref() {
                Expr::Name(m) if !row.contains_key(m) => match m.as_str() {
                    "document" => Ok(Some((Model::Document, ns.clone()))),
                    "relational" => Ok(Some((Model::Relational, ns.clone()))),
                    _ => Ok(None),
                },
                _ => Ok(None),
            },
            Expr::CollectionBind(p) => match self.params.get(&format!("@{p}")) {
                Some(Value::String(name)) => Ok(Some(self.named_collection(name)?)),
                Some(v) => invalid(format!(
                    "@@{p} must be a collection name (a string), not {v}"
                )),
                None => invalid(format!("bind parameter @@{p} is not given")),
            },
            _ => Ok(None),
        }
    }

    /// `SHORTEST_PATH ... OPTIONS {weightAttribute: 'w'}`: the edge property whose sum the
    /// path minimises (`None`: hops).
    fn path_weight(&self, options: &Value) -> Result<Option<String>> {
        let Value::Object(o) = options else {
            return invalid(format!(
                "SHORTEST_PATH OPTIONS must be an object, not {options}"
            ));
        };
        let mut weight = None;
        for (k, v) in o {
            match (k.as_str(), v) {
                ("weightAttribute", Value::String(w)) if !w.is_empty() => weight = Some(w.clone()),
                ("weightAttribute", Value::Null) => {}
                ("weightAttribute", v) => {
                    return invalid(format!(
                        "SHORTEST_PATH OPTIONS weightAttribute must be an attribute name, not {v}"
                    ));
                }
                (k, _) => {
                    return invalid(format!(
                        "SHORTEST_PATH OPTIONS {k:?} is not supported (weightAttribute is; an edge without a numeric weight >= 0 is an error, there is no defaultWeight)"
                    ));
                }
            }
        }
        Ok(weight)
    }

    /// Bind parameter `@name`'s value.
    pub(crate) fn param(&self, name: &str) -> Option<&Value> {
        self.params.get(name)
    }

    /// The row, document or vertex `urn` as `FOR` over its collection binds it.
    pub(crate) fn row_value(&self, urn: &str) -> Result<Value> {
        let parsed = Urn::parse(urn).map_err(|e| EvalError::Invalid(e.to_string()))?;
        match self.snap.resource(&parsed).map_err(view_error)? {
            Some(d) => Ok(resource_value(urn, d.data, Some(d.revision))),
            None => invalid(format!("{urn} is not in the snapshot the plan read")),
        }
    }

    /// A collection by name: `document.x`, `relational.x`, or a bare name.
    fn named_collection(&self, name: &str) -> Result<(Model, String)> {
        match name.split_once('.') {
            Some(("document", ns)) => Ok((Model::Document, ns.to_owned())),
            Some(("relational", ns)) => Ok((Model::Relational, ns.to_owned())),
            _ => self.resolve_collection(name),
        }
    }

    fn resolve_collection(&self, name: &str) -> Result<(Model, String)> {
        self.lookup_collection(name)?.ok_or_else(|| {
            EvalError::Invalid(format!(
                "unknown variable or collection {name} (no document or relational namespace has that name)"
            ))
        })
    }

    /// The document or relational namespace a bare name means (`None`: neither exists; an
    /// error when both do).
    fn lookup_collection(&self, name: &str) -> Result<Option<(Model, String)>> {
        if let Some(r) = self.resolved.borrow().get(name) {
            return Ok(r.clone());
        }
        let has = |model| self.snap.has_namespace(model, name).map_err(view_error);
        let found = match (has(Model::Document)?, has(Model::Relational)?) {
            (true, true) => {
                return invalid(format!(
                    "{name} is both a document and a relational namespace: write document.{name} or relational.{name}"
                ));
            }
            (true, false) => Some((Model::Document, name.to_owned())),
            (false, true) => Some((Model::Relational, name.to_owned())),
            (false, false) => None,
        };
        self.resolved
            .borrow_mut()
            .insert(name.to_owned(), found.clone());
        Ok(found)
    }

    fn scan(&self, model: Model, ns: &str) -> Result<std::rc::Rc<Vec<Value>>> {
        let k = (model, ns.to_owned());
        if let Some(v) = self.scans.borrow().get(&k) {
            return Ok(v.clone());
        }
        let prefix = format!("urn:themis:{model}:{ns}:");
        // Read row by row: a deadline or the memory bound stops the read itself, not only
        // what comes after it (a collection of millions of rows is gigabytes as values).
        let budget = self.limits.scan_bytes_max;
        let mut bytes = self.scanned.get();
        let mut items: Vec<(String, Value)> = Vec::new();
        let mut stopped: Option<EvalError> = None;
        let halt = || themis_materializers::Error::Storage("the read was stopped".into());
        let read = self.snap.scan_resources(model, ns, |id, state| {
            if state.deleted {
                return Ok(());
            }
            if let Err(e) = self.step(1) {
                stopped = Some(e);
                return Err(halt());
            }
            let data: Value = serde_json::from_str(state.data).map_err(|e| {
                themis_materializers::Error::Storage(format!("a resource of {ns}: {e}"))
            })?;
            let item = resource_value(&format!("{prefix}{id}"), data, Some(state.revision));
            bytes += size_of(&item, budget) + id.len();
            if bytes > budget {
                stopped = Some(EvalError::MemoryExhausted(format!(
                    "the collections this query reads take more than {budget} bytes as \
                     values (evaluated row by row, AQL holds every collection it reads); \
                     read fewer or smaller collections"
                )));
                return Err(halt());
            }
            items.push((id.to_owned(), item));
            Ok(())
        });
        self.scanned.set(bytes);
        if let Some(e) = stopped {
            return Err(e);
        }
        read.map_err(view_error)?;
        // In id order over every shard, as one collection.
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let items: Vec<Value> = items.into_iter().map(|(_, v)| v).collect();
        let items = std::rc::Rc::new(items);
        self.scans.borrow_mut().insert(k, items.clone());
        Ok(items)
    }

    fn regex(&self, pattern: &str, case_insensitive: bool) -> Result<regex::Regex> {
        let full = if case_insensitive {
            format!("(?i){pattern}")
        } else {
            pattern.to_owned()
        };
        if let Some(r) = self.regexes.borrow().get(&full) {
            return Ok(r.clone());
        }
        let r = regex::RegexBuilder::new(&full)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                // regex's message spans lines (the pattern, a caret, the reason): keep the reason.
                let why = e.to_string();
                let why = why.lines().last().unwrap_or("").trim().to_owned();
                EvalError::Invalid(format!("invalid regular expression {pattern:?}: {why}"))
            })?;
        self.regexes.borrow_mut().insert(full, r.clone());
        Ok(r)
    }

    /// Evaluates `e` in `row` (`current`: the element inside an expansion `[*]`). Recurses
    /// once per level of `e` (at most [`super::HEIGHT_MAX`]), on a stack that grows as needed.
    #[recursive::recursive]
    pub fn eval(&self, e: &Expr, row: &Scope, current: Option<&Value>) -> Result<Value> {
        // A collection in an expression is its documents (as ArangoDB's subquery
        // `(FOR x IN c RETURN x)`): a name that is no variable, `document.x`, `@@c`.
        if let Some((model, ns)) = self.collection_of(e, row)? {
            return Ok(Value::Array(self.scan(model, &ns)?.to_vec()));
        }
        Ok(match e {
            Expr::Null | Expr::Bool(_) | Expr::Int(_) | Expr::Float(_) | Expr::Str(_) => {
                literal(e).unwrap_or(Value::Null)
            }
            Expr::Name(n) => match row.get(n) {
                Some(v) => v.clone(),
                None => return invalid(format!("unknown variable {n}")), // collection_of said
            },
            Expr::Bind(n) => {
                self.params.get(n).cloned().ok_or_else(|| {
                    EvalError::Invalid(format!("bind parameter @{n} is not given"))
                })?
            }
            Expr::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut bytes = 0usize;
                for i in items {
                    let v = self.eval(i, row, current)?;
                    bytes += size_of(&v, self.limits.value_bytes_max);
                    self.limits.value_fits(bytes, || "an array".into())?;
                    out.push(v);
                }
                Value::Array(out)
            }
            Expr::Object(members) => {
                let mut m = Map::new();
                let mut bytes = 0usize;
                for (k, v) in members {
                    let k = match self.eval(k, row, current)? {
                        Value::String(s) => s,
                        other => to_string(&other),
                    };
                    let v = self.eval(v, row, current)?;
                    bytes += k.len() + size_of(&v, self.limits.value_bytes_max);
                    self.limits.value_fits(bytes, || "an object".into())?;
                    m.insert(k, v);
                }
                Value::Object(m)
            }
            Expr::Attr(base, name) => match self.eval(base, row, current)? {
                Value::Object(mut o) => o.remove(name).unwrap_or(Value::Null),
                _ => Value::Null,
            },
            Expr::Index(base, index) => {
                let b = self.eval(base, row, current)?;
                let i = self.eval(index, row, current)?;
                match (b, i) {
                    (Value::Array(a), Value::Number(n)) => {
                        let n = n.as_f64().unwrap_or(0.0).trunc() as i64;
                        let at = if n < 0 { a.len() as i64 + n } else { n };
                        if at < 0 {
                            Value::Null
                        } else {
                            a.get(at as usize).cloned().unwrap_or(Value::Null)
                        }
                    }
                    (Value::Object(mut o), Value::String(k)) => o.remove(&k).unwrap_or(Value::Null),
                    _ => Value::Null,
                }
            }
            Expr::Expand(base, rest) => match self.eval(base, row, current)? {
                Value::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in &items {
                        out.push(self.eval(rest, row, Some(item))?);
                    }
                    Value::Array(out)
                }
                _ => Value::Array(Vec::new()),
            },
            Expr::CollectionBind(p) => return invalid(format!("@@{p} names no collection")),
            Expr::Current => current.cloned().unwrap_or(Value::Null),
            Expr::Call(name, args) => self.call(name, args, row, current)?,
            Expr::Not(x) => Value::Bool(!truthy(&self.eval(x, row, current)?)),
            Expr::Neg(x) => num(-to_number(&self.eval(x, row, current)?)),
            Expr::Ternary(c, a, b) => {
                let cv = self.eval(c, row, current)?;
                if truthy(&cv) {
                    self.eval(a, row, current)?
                } else {
                    self.eval(b, row, current)?
                }
            }
            Expr::Subquery(q) => Value::Array(self.query(q, row)?),
            Expr::Binary(op, a, b) => self.binary(*op, a, b, row, current)?,
        })
    }

    fn binary(
        &self,
        op: BinOp,
        a: &Expr,
        b: &Expr,
        row: &Scope,
        current: Option<&Value>,
    ) -> Result<Value> {
        let l = self.eval(a, row, current)?;
        match op {
            BinOp::And => {
                return if truthy(&l) {
                    self.eval(b, row, current)
                } else {
                    Ok(l)
                };
            }
            BinOp::Or => {
                return if truthy(&l) {
                    Ok(l)
                } else {
                    self.eval(b, row, current)
                };
            }
            _ => {}
        }
        let r = self.eval(b, row, current)?;
        Ok(match op {
            BinOp::Eq => Value::Bool(equal(&l, &r)),
            BinOp::Ne => Value::Bool(!equal(&l, &r)),
            BinOp::Lt => Value::Bool(compare(&l, &r).is_lt()),
            BinOp::Le => Value::Bool(compare(&l, &r).is_le()),
            BinOp::Gt => Value::Bool(compare(&l, &r).is_gt()),
            BinOp::Ge => Value::Bool(compare(&l, &r).is_ge()),
            BinOp::In | BinOp::NotIn => {
                let found = r
                    .as_array()
                    .is_some_and(|items| items.iter().any(|i| equal(i, &l)));
                Value::Bool(found == (op == BinOp::In))
            }
            BinOp::Like | BinOp::NotLike => {
                let re = self.regex(&like_regex(&to_string(&r)), false)?;
                Value::Bool(re.is_match(&to_string(&l)) == (op == BinOp::Like))
            }
            BinOp::Regex | BinOp::NotRegex => {
                let re = self.regex(&to_string(&r), false)?;
                Value::Bool(re.is_match(&to_string(&l)) == (op == BinOp::Regex))
            }
            BinOp::Add => num(to_number(&l) + to_number(&r)),
            BinOp::Sub => num(to_number(&l) - to_number(&r)),
            BinOp::Mul => num(to_number(&l) * to_number(&r)),
            BinOp::Div => {
                let d = to_number(&r);
                if d == 0.0 {
                    Value::Null
                } else {
                    num(to_number(&l) / d)
                }
            }
            BinOp::Mod => {
                let d = to_number(&r);
                if d == 0.0 {
                    Value::Null
                } else {
                    num(to_number(&l) % d)
                }
            }
            BinOp::Range => {
                let (from, to) = (to_number(&l).trunc() as i64, to_number(&r).trunc() as i64);
                let n = from.abs_diff(to).saturating_add(1);
                if n > RANGE_MAX {
                    return invalid(format!(
                        "range {from}..{to} has {n} values (at most {RANGE_MAX})"
                    ));
                }
                self.step(n)?;
                if from <= to {
                    Value::Array((from..=to).map(Value::from).collect())
                } else {
                    Value::Array((to..=from).rev().map(Value::from).collect())
                }
            }
            BinOp::And | BinOp::Or => unreachable!("handled above"),
        })
    }

    fn call(
        &self,
        name: &str,
        args: &[Expr],
        row: &Scope,
        current: Option<&Value>,
    ) -> Result<Value> {
        let mut a = Vec::with_capacity(args.len());
        for e in args {
            a.push(self.eval(e, row, current)?);
        }
        let arg = |i: usize| a.get(i).unwrap_or(&Value::Null);
        match name {
            "NOW" => Ok(Value::from(self.snap.now_ms())),
            "LIKE" => {
                let re = self.regex(
                    &like_regex(&to_string(arg(1))),
                    a.get(2).is_some_and(truthy),
                )?;
                Ok(Value::Bool(re.is_match(&to_string(arg(0)))))
            }
            "REGEX_TEST" => {
                let re = self.regex(&to_string(arg(1)), a.get(2).is_some_and(truthy))?;
                Ok(Value::Bool(re.is_match(&to_string(arg(0)))))
            }
            "DOCUMENT" => self.document(&a),
            "KNN" | "NEAR" => self.knn(name, &a),
            "FULLTEXT" => self.fulltext(&a),
            "BM25" => Ok(arg(0).get("_score").cloned().unwrap_or(Value::Null)),
            "TS_RANGE" => self.ts_range(&a),
            _ => {
                let estimate = estimate(name, &a, self.limits.value_bytes_max);
                self.limits.value_fits(estimate, || format!("{name}()"))?;
                let v = functions::call(name, &a).map_err(EvalError::Invalid)?;
                self.limits
                    .value_fits(size_of(&v, self.limits.value_bytes_max), || {
                        format!("{name}()")
                    })?;
                Ok(v)
            }
        }
    }

    /// `DOCUMENT(id)` or `DOCUMENT(collection, key)`: a document or row by `namespace/key` or
    /// URN (`null` when absent); an array of ids gives an array of documents.
    fn document(&self, a: &[Value]) -> Result<Value> {
        if a.len() == 2 {
            let id = format!("{}/{}", to_string(&a[0]), to_string(&a[1]));
            return self.document(&[Value::from(id)]);
        }
        match &a[0] {
            Value::Array(ids) => Ok(Value::Array(
                ids.iter()
                    .map(|id| self.document(std::slice::from_ref(id)))
                    .collect::<Result<_>>()?,
            )),
            Value::String(id) => {
                let urn = if id.starts_with("urn:") {
                    id.clone()
                } else if let Some((ns, key)) = id.split_once('/') {
                    match self.lookup_collection(ns)? {
                        Some((model, ns)) => format!("urn:themis:{model}:{ns}:{key}"),
                        None => return Ok(Value::Null),
                    }
                } else {
                    return invalid(format!("DOCUMENT({id:?}): give `collection/key` or a URN"));
                };
                let Ok(urn) = Urn::parse(&urn) else {
                    return Ok(Value::Null);
                };
                if !matches!(urn.model(), Model::Document | Model::Relational) {
                    return invalid(format!("DOCUMENT() reads documents and rows, not {urn}"));
                }
                Ok(self
                    .snap
                    .resource(&urn)
                    .map_err(view_error)?
                    .map_or(Value::Null, |d| {
                        resource_value(urn.as_str(), d.data, Some(d.revision))
                    }))
            }
            v => invalid(format!("DOCUMENT() expects an id, not {}", type_name(v))),
        }
    }

    /// `KNN(namespace, vector, k [, ef])`: the `k` nearest vectors of a vector namespace, as
    /// `{_key, _id, _urn, _distance, ...payload}`, nearest first.
    fn knn(&self, name: &str, a: &[Value]) -> Result<Value> {
        let ns = match &a[0] {
            Value::String(s) => s.clone(),
            v => {
                return invalid(format!(
                    "{name}() expects a namespace first, not {}",
                    type_name(v)
                ));
            }
        };
        let Some(items) = a[1].as_array() else {
            return invalid(format!(
                "{name}() expects a vector (an array of numbers) second"
            ));
        };
        let mut vector = Vec::with_capacity(items.len());
        for x in items {
            match x.as_f64() {
                Some(f) => vector.push(f as f32),
                None => return invalid(format!("{name}(): a vector holds numbers only, not {x}")),
            }
        }
        let count = |v: &Value, what: &str| -> Result<usize> {
            match v.as_f64() {
                Some(f) if f >= 1.0 && f.fract() == 0.0 => Ok(f as usize),
                _ => invalid(format!(
                    "{name}(): {what} must be a whole number >= 1, not {v}"
                )),
            }
        };
        let k = count(&a[2], "k")?;
        let ef = a.get(3).map(|v| count(v, "ef")).transpose()?;
        let search = KnnSearch {
            namespace: &ns,
            vector: &vector,
            k,
            ef,
            filter: None,
        };
        let m = self.snap.materializer();
        let (hits, token) = m.knn_now(&search).map_err(view_error)?;
        self.searched(&token);
        Ok(Value::Array(
            hits.into_iter()
                .map(|(_, h)| {
                    let mut v = resource_value(&h.urn, (*h.payload).clone(), None);
                    if let Value::Object(o) = &mut v {
                        o.insert("_distance".into(), num(h.distance));
                    }
                    v
                })
                .collect(),
        ))
    }

    /// `FULLTEXT(collection, query [, k])`: the best `k` (default 100) documents or rows of a
    /// namespace for a query (tantivy's syntax over its text fields), best first, each with
    /// `_score` (BM25).
    fn fulltext(&self, a: &[Value]) -> Result<Value> {
        let coll = to_string(&a[0]);
        let (model, ns) = self.named_collection(&coll)?;
        let query = match &a[1] {
            Value::String(s) => s.clone(),
            v => {
                return invalid(format!(
                    "FULLTEXT() expects a query string, not {}",
                    type_name(v)
                ));
            }
        };
        let k = match a.get(2) {
            None => 100,
            Some(v) => match v.as_f64() {
                Some(f) if f >= 1.0 && f.fract() == 0.0 => f as usize,
                _ => {
                    return invalid(format!(
                        "FULLTEXT(): k must be a whole number >= 1, not {v}"
                    ));
                }
            },
        };
        let search = TextSearch {
            model,
            namespace: &ns,
            query: &query,
            k,
        };
        let m = self.snap.materializer();
        let (hits, token) = m.search_now(&search).map_err(view_error)?;
        self.searched(&token);
        Ok(Value::Array(
            hits.into_iter()
                .map(|(_, h, doc)| {
                    let mut v = resource_value(&h.urn, doc, None);
                    if let Value::Object(o) = &mut v {
                        o.insert("_score".into(), num(f64::from(h.score)));
                    }
                    v
                })
                .collect(),
        ))
    }

    /// `TS_RANGE(namespace, series, from, to [, step, agg])`: `[{ts, value}]`.
    fn ts_range(&self, a: &[Value]) -> Result<Value> {
        let (ns, series) = (to_string(&a[0]), to_string(&a[1]));
        let urn = Urn::parse(&format!("urn:themis:timeseries:{ns}:{series}"))
            .map_err(|e| EvalError::Invalid(format!("TS_RANGE(): {e}")))?;
        let time = |v: &Value, what: &str| -> Result<i64> {
            if let Some(f) = v.as_f64() {
                return Ok(f as i64);
            }
            match functions::date(v) {
                Some(d) => Ok(d.timestamp_millis()),
                None => invalid(format!(
                    "TS_RANGE(): {what} must be ms since the epoch or an ISO date, not {v}"
                )),
            }
        };
        let (from, to) = (time(&a[2], "from")?, time(&a[3], "to")?);
        let step = match (a.get(4), a.get(5)) {
            (None, _) | (Some(Value::Null), _) => None,
            (Some(s), agg) => {
                let step = match s.as_f64() {
                    Some(f) if f >= 1.0 => f as i64,
                    _ => {
                        return invalid(format!(
                            "TS_RANGE(): step must be a number of ms >= 1, not {s}"
                        ));
                    }
                };
                let agg_name = agg.map_or("avg".to_owned(), |v| to_string(v).to_lowercase());
                let agg = timeseries::Agg::parse(&agg_name).ok_or_else(|| {
                    EvalError::Invalid(format!(
                        "TS_RANGE(): unknown aggregate {agg_name:?} (min, max, avg, sum, count, first, last)"
                    ))
                })?;
                Some((step, agg))
            }
        };
        let answer = self
            .snap
            .ts_range(&urn, &timeseries::Range { from, to, step })
            .map_err(view_error)?;
        Ok(Value::Array(
            answer
                .points
                .into_iter()
                .map(|(ts, v)| {
                    let mut o = Map::new();
                    o.insert("ts".into(), Value::from(ts));
                    o.insert("value".into(), num(v));
                    Value::Object(o)
                })
                .collect(),
        ))
    }
}

fn gdir(d: Direction) -> GDir {
    match d {
        Direction::Outbound => GDir::Outbound,
        Direction::Inbound => GDir::Inbound,
        Direction::Any => GDir::Any,
    }
}

/// The value of a literal (`null`, a boolean, a number, a string), or `None`.
pub(crate) fn literal(e: &Expr) -> Option<Value> {
    Some(match e {
        Expr::Null => Value::Null,
        Expr::Bool(b) => Value::Bool(*b),
        Expr::Int(n) => Value::from(*n),
        Expr::Float(f) => num(*f),
        Expr::Str(s) => Value::from(s.as_str()),
        _ => return None,
    })
}

/// `namespace/key` of a URN.
fn short_id(urn: &str) -> String {
    match Urn::parse(urn) {
        Ok(u) => format!("{}/{}", u.namespace(), u.id()),
        Err(_) => urn.to_owned(),
    }
}

/// A document, row or vertex as AQL shows it: its data with `_key`, `_id`, `_urn` (and
/// `_rev`).
fn resource_value(urn: &str, data: Value, revision: Option<u64>) -> Value {
    let mut o = match data {
        Value::Object(o) => o,
        Value::Null => Map::new(),
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            m
        }
    };
    if let Ok(u) = Urn::parse(urn) {
        o.insert("_key".into(), Value::from(u.id()));
    }
    o.insert("_id".into(), Value::from(short_id(urn)));
    o.insert("_urn".into(), Value::from(urn));
    if let Some(r) = revision {
        o.insert("_rev".into(), Value::from(r));
    }
    Value::Object(o)
}

fn edge_value(e: &graph::Edge) -> Value {
    let mut o = match &e.data {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    o.insert("_from".into(), Value::from(short_id(&e.from)));
    o.insert("_to".into(), Value::from(short_id(&e.to)));
    o.insert("label".into(), Value::from(e.label.as_str()));
    Value::Object(o)
}

/// Calls `f` on every expression of `q`, subqueries included.
pub fn walk_query(q: &Query, f: &mut dyn FnMut(&Expr)) {
    for op in &q.ops {
        for e in op.exprs() {
            walk(e, f);
        }
    }
    walk(&q.ret, f);
}

fn walk(e: &Expr, f: &mut dyn FnMut(&Expr)) {
    f(e);
    match e {
        Expr::Array(items) | Expr::Call(_, items) => items.iter().for_each(|i| walk(i, f)),
        Expr::Object(members) => members.iter().for_each(|(k, v)| {
            walk(k, f);
            walk(v, f);
        }),
        Expr::Attr(b, _) | Expr::Not(b) | Expr::Neg(b) => walk(b, f),
        Expr::Index(a, b) | Expr::Expand(a, b) | Expr::Binary(_, a, b) => {
            walk(a, f);
            walk(b, f);
        }
        Expr::Ternary(a, b, c) => {
            walk(a, f);
            walk(b, f);
            walk(c, f);
        }
        Expr::Subquery(q) => walk_query(q, f),
        _ => {}
    }
}
