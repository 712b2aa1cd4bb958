//! AQL over DataFusion plans: the leading part of a query that reads relational namespaces
//! (`FOR` over tables, `FILTER`s on their columns, joins, `COLLECT … AGGREGATE`, `SORT`,
//! `LIMIT`) becomes one DataFusion plan over the same Arrow tables SQL reads, from the same
//! snapshot as the rest of the query; the interpreter goes on from the rows the plan makes.
//!
//! What is pushed down, in this order (the first operation that does not fit ends it):
//! 1. `FOR x IN table` (a relational namespace; later `FOR`s join, on the `==` conditions
//!    between their columns) and `FILTER`s over their columns: `==`, `!=`, `<`, `<=`, `>`,
//!    `>=`, `IN`, `NOT IN`, `AND`, `OR`, `NOT` and truthiness, with constants and bind
//!    parameters; a `FILTER` whose `AND`-parts partly fit pushes those and ends the prefix;
//! 2. `COLLECT g = x.col, … AGGREGATE a = SUM|MIN|MAX|AVG|AVERAGE|COUNT|LENGTH(x.col) …
//!    [WITH COUNT INTO n]`, then `FILTER`s over its variables;
//! 3. `SORT` over columns or collected variables; 4. `LIMIT`.
//!
//! Everything keeps AQL's meaning, not SQL's: null is equal to null and less than any other
//! value, comparisons are two-valued (never NULL), joins match nulls, `SUM` of nothing is 0,
//! groups come out sorted, and rows keep the interpreter's order (collection order is `_key`
//! order; `SORT` is stable), so the answer is the interpreter's. Comparisons between values
//! of different types (a number column with a string), functions, arithmetic, `LIKE` and
//! timestamp or JSON columns are left to the interpreter.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::{Column, NullEquality};
use datafusion::functions::expr_fn::coalesce;
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::{avg, max, min, sum};
use datafusion::logical_expr::{
    Expr as Dx, LogicalPlan, LogicalPlanBuilder, Operator, SortExpr, binary_expr, cast, lit,
};
use serde_json::{Map, Value};
use themis_log::Model;

use super::eval::{EvalError, Evaluator, Scope, literal};
use super::parser::{BinOp, Expr, Op, Query, Source};
use super::value::{compare, num};

type Result<T> = std::result::Result<T, EvalError>;

/// Deepest condition a plan takes, and most conditions it ANDs together: DataFusion evaluates
/// expressions recursively on the runtime's threads, so larger ones stay with the interpreter,
/// whose stack grows.
const PREDICATE_DEPTH_MAX: usize = 64;

/// What the planner needs from the engine: tables read in the query's snapshot, and a way to
/// run a plan.
pub trait Runner {
    /// Relational namespace `ns` as a table read in the snapshot (`None`: it has no config,
    /// say when it was just declared; the interpreter reads it). The layout follows the
    /// current config, which only ever adds nullable columns or widens one to json (not
    /// pushed down), so it fits the snapshot's rows.
    fn table(&self, ns: &str) -> Result<Option<(SchemaRef, Arc<dyn TableProvider>)>>;

    /// Runs `plan` to its batches (at most the evaluator's row limit).
    fn run(&self, plan: LogicalPlan) -> Result<Vec<RecordBatch>>;
}

/// The rows the pushed-down prefix made and the query that goes on from them.
#[derive(Debug)]
pub struct Pushed {
    /// Rows of variable bindings, in the interpreter's order.
    pub rows: Vec<Scope>,
    /// The rest of the query (a `FILTER` of what did not fit, then the operations after).
    pub rest: Query,
    /// Operations of the query the plan ran (a partly pushed `FILTER` counts).
    pub ops: usize,
}

/// The classes of values a column holds (AQL compares values of one class only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Bool,
    Number,
    Text,
}

/// A column (or aggregate) as the plan sees it.
#[derive(Debug, Clone)]
struct Col {
    expr: Dx,
    class: Class,
    /// Its values read back as the JSON the interpreter shows (floats may not: a whole number
    /// stored in a float column reads back as `3.0`, the interpreter shows `3`).
    exact: bool,
    /// How a value read back becomes the interpreter's.
    post: Post,
}

/// How an output value becomes the interpreter's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Post {
    /// As read.
    Raw,
    /// A number as AQL's arithmetic makes it (whole numbers as integers).
    Number,
}

/// A `FOR` variable over a table.
#[derive(Debug)]
struct Var {
    name: String,
    ns: String,
    alias: String,
    schema: SchemaRef,
}

/// One side of a comparison.
#[derive(Debug, Clone)]
enum Operand {
    Col(Col),
    Const(Value),
}

/// How an output row binds a variable.
#[derive(Debug)]
enum Bind {
    /// The whole row, read from the snapshot by `_key` (output column `key`).
    Row { var: usize, key: usize },
    /// Only these attributes (the rest of the query reads nothing else of it).
    Attrs {
        var: usize,
        attrs: Vec<(String, usize)>,
    },
    /// A collected value (output column).
    Value {
        name: String,
        column: usize,
        post: Post,
    },
}

struct Planner<'a, 'e> {
    ev: &'a Evaluator<'e>,
    runner: &'a dyn Runner,
    vars: Vec<Var>,
    /// After `COLLECT`: its variables.
    collected: Option<BTreeMap<String, Col>>,
}

/// Pushes the leading part of `q` (a top-level query) down into a DataFusion plan when it
/// reads relational tables and does more than scan one; `None` leaves all to the interpreter.
pub fn pushdown(ev: &Evaluator<'_>, runner: &dyn Runner, q: &Query) -> Result<Option<Pushed>> {
    // Only when a table scan is followed by something a plan does (no table is built for a
    // plain `FOR x IN t RETURN ...`).
    if !matches!(
        q.ops.get(1),
        Some(Op::For { .. } | Op::Filter(_) | Op::Collect { .. } | Op::Sort(_) | Op::Limit { .. })
    ) || !matches!(q.ops.first(), Some(Op::For { .. }))
    {
        return Ok(None);
    }
    let mut p = Planner {
        ev,
        runner,
        vars: Vec::new(),
        collected: None,
    };
    let mut scans: Vec<LogicalPlanBuilder> = Vec::new();
    let mut at = 0;
    let mut residual: Option<Expr> = None;
    let mut filters: Vec<Dx> = Vec::new();
    let mut work = false;
    // 1. FORs over tables and FILTERs over their columns.
    while at < q.ops.len() {
        match &q.ops[at] {
            Op::For { vars, source } => {
                let Some(scan) = p.table_scan(vars, source)? else {
                    break;
                };
                work |= !scans.is_empty();
                scans.push(scan);
            }
            Op::Filter(e) if !scans.is_empty() => {
                let (pushed, rest) = p.conjuncts(e, PREDICATE_DEPTH_MAX - filters.len());
                if pushed.is_empty() {
                    break;
                }
                work = true;
                filters.extend(pushed);
                if let Some(rest) = rest {
                    residual = Some(rest);
                    at += 1;
                    break;
                }
            }
            _ => break,
        }
        at += 1;
    }
    // Joins, left-deep in FOR order: `==` conditions between a table's columns and an
    // earlier table's become its keys and leave `filters`; the rest filter the rows.
    let mut scans = scans.into_iter();
    let Some(mut b) = scans.next() else {
        return Ok(None);
    };
    for (i, scan) in scans.enumerate() {
        b = p.join(b, scan, i + 1, &mut filters)?;
    }
    if let Some(f) = filters.into_iter().reduce(Dx::and) {
        b = b.filter(f).map_err(plan_error)?;
    }
    // 2. COLLECT, then FILTERs over what it made.
    let mut tiebreak: Vec<SortExpr> = p
        .vars
        .iter()
        .map(|v| column(&v.alias, "id").sort(true, false))
        .collect();
    if residual.is_none()
        && let Some(Op::Collect {
            groups,
            aggregates,
            into: None,
            count_into,
            ..
        }) = q.ops.get(at)
        && let Some((built, order)) = p.collect(b.clone(), groups, aggregates, count_into)?
    {
        b = built;
        tiebreak = order;
        work = true;
        at += 1;
        let mut having = 0;
        while let Some(Op::Filter(e)) = q.ops.get(at) {
            let (pushed, rest) = p.conjuncts(e, PREDICATE_DEPTH_MAX - having);
            having += pushed.len();
            if pushed.is_empty() {
                break;
            }
            b = b
                .filter(pushed.into_iter().reduce(Dx::and).expect("some"))
                .map_err(plan_error)?;
            at += 1;
            if let Some(rest) = rest {
                residual = Some(rest);
                break;
            }
        }
    }
    // 3. SORT (stable: ties keep the order before it), 4. LIMIT.
    let mut order = Vec::new();
    if residual.is_none()
        && let Some(Op::Sort(keys)) = q.ops.get(at)
        && let Some(keys) = p.sort_keys(keys)
    {
        order = keys;
        work = true;
        at += 1;
    }
    order.extend(tiebreak);
    if !order.is_empty() {
        b = b.sort(order).map_err(plan_error)?;
    }
    if residual.is_none()
        && let Some(Op::Limit { offset, count }) = q.ops.get(at)
        && let Some((skip, fetch)) = p.limit(offset.as_ref(), count)
    {
        b = b.limit(skip, Some(fetch)).map_err(plan_error)?;
        work = true;
        at += 1;
    }
    if !work {
        return Ok(None);
    }
    // What the rest reads of each row.
    let rest = Query {
        ops: residual
            .map(Op::Filter)
            .into_iter()
            .chain(q.ops[at..].iter().cloned())
            .collect(),
        distinct: q.distinct,
        ret: q.ret.clone(),
    };
    let (projection, binds) = p.outputs(&rest);
    let plan = b
        .project(projection)
        .map_err(plan_error)?
        .build()
        .map_err(plan_error)?;
    let batches = runner.run(plan)?;
    let rows = p.bind(&batches, &binds)?;
    Ok(Some(Pushed {
        rows,
        rest,
        ops: at,
    }))
}

fn plan_error(e: datafusion::error::DataFusionError) -> EvalError {
    EvalError::Failed(format!("planning AQL over tables: {}", e.strip_backtrace()))
}

fn column(alias: &str, name: &str) -> Dx {
    Dx::Column(Column::new(Some(alias), name))
}

impl Planner<'_, '_> {
    /// `FOR x IN table` as a scan, or `None` when the source is no relational table.
    fn table_scan(
        &mut self,
        vars: &[String],
        source: &Source,
    ) -> Result<Option<LogicalPlanBuilder>> {
        let [name] = vars else {
            return Ok(None);
        };
        let Source::Expr(e) = source else {
            return Ok(None);
        };
        // A name bound by an earlier FOR is that variable, not a collection (also as the
        // base of `relational.x` or `document.x`).
        let bound = |n: &String| self.vars.iter().any(|v| &v.name == n);
        let base = match e {
            Expr::Name(n) => Some(n),
            Expr::Attr(b, _) => match b.as_ref() {
                Expr::Name(n) => Some(n),
                _ => None,
            },
            _ => None,
        };
        if bound(name) || base.is_some_and(bound) {
            return Ok(None);
        }
        // An unknown or ambiguous collection is the interpreter's to report, when rows reach it.
        let Ok(Some((Model::Relational, ns))) = self.ev.collection_of(e, &Scope::new()) else {
            return Ok(None);
        };
        let Some((schema, provider)) = self.runner.table(&ns)? else {
            return Ok(None);
        };
        let alias = format!("t{}", self.vars.len());
        let scan = LogicalPlanBuilder::scan(
            alias.as_str(),
            datafusion::datasource::provider_as_source(provider),
            None,
        )
        .map_err(plan_error)?;
        self.vars.push(Var {
            name: name.clone(),
            ns,
            alias,
            schema,
        });
        Ok(Some(scan))
    }

    /// Joins the newest table to `left`: `==` conditions between its columns and earlier
    /// ones (same type, nulls matching) become keys and leave `filters`.
    fn join(
        &self,
        left: LogicalPlanBuilder,
        right: LogicalPlanBuilder,
        newest: usize,
        filters: &mut Vec<Dx>,
    ) -> Result<LogicalPlanBuilder> {
        let mut keys: (Vec<Column>, Vec<Column>) = (Vec::new(), Vec::new());
        filters.retain(|f| {
            let Dx::BinaryExpr(b) = f else { return true };
            let (Dx::Column(l), Dx::Column(r)) = (b.left.as_ref(), b.right.as_ref()) else {
                return true;
            };
            if b.op != Operator::IsNotDistinctFrom {
                return true;
            }
            // Which table a column is of, and its type (keys of one type only).
            let of = |c: &Column| {
                let table = c.relation.as_ref()?.table();
                let t = self.vars.iter().position(|v| v.alias == table)?;
                let field = self.vars[t].schema.field_with_name(&c.name).ok()?;
                Some((t, field.data_type().clone()))
            };
            let (Some((a, ta)), Some((b, tb))) = (of(l), of(r)) else {
                return true;
            };
            if ta != tb {
                return true;
            }
            let (key_left, key_right) = match (a, b) {
                (a, b) if a < newest && b == newest => (l, r),
                (a, b) if b < newest && a == newest => (r, l),
                _ => return true,
            };
            keys.0.push(key_left.clone());
            keys.1.push(key_right.clone());
            false
        });
        let right = right.build().map_err(plan_error)?;
        if keys.0.is_empty() {
            return left.cross_join(right).map_err(plan_error);
        }
        left.join_detailed(
            right,
            datafusion::logical_expr::JoinType::Inner,
            keys,
            None,
            NullEquality::NullEqualsNull,
        )
        .map_err(plan_error)
    }

    /// Splits `e` into the `AND`-parts that become plan filters (at most `budget`: the plan
    /// ANDs them into one expression) and a rest (or `None`).
    fn conjuncts(&self, e: &Expr, budget: usize) -> (Vec<Dx>, Option<Expr>) {
        let mut parts = Vec::new();
        flatten_and(e, &mut parts);
        let mut pushed = Vec::new();
        let mut rest: Option<Expr> = None;
        for part in parts {
            match self.predicate(part, 0) {
                Some(d) if rest.is_none() && pushed.len() < budget => pushed.push(d),
                // After a part that does not fit, keep the order of evaluation (AQL's AND
                // stops at the first false part; all parts here are free of errors, but the
                // rest may not be).
                _ => {
                    rest = Some(match rest {
                        None => part.clone(),
                        Some(r) => Expr::Binary(BinOp::And, Box::new(r), Box::new(part.clone())),
                    })
                }
            }
        }
        (pushed, rest)
    }

    /// A condition as a two-valued (never NULL) boolean expression; `None` when it does not
    /// fit a plan, or is nested deeper than [`PREDICATE_DEPTH_MAX`] (DataFusion evaluates
    /// expressions recursively, on threads whose stacks are the runtime's).
    fn predicate(&self, e: &Expr, depth: usize) -> Option<Dx> {
        if depth > PREDICATE_DEPTH_MAX {
            return None;
        }
        let d = depth + 1;
        match e {
            Expr::Binary(BinOp::And, a, b) => {
                Some(self.predicate(a, d)?.and(self.predicate(b, d)?))
            }
            Expr::Binary(BinOp::Or, a, b) => Some(self.predicate(a, d)?.or(self.predicate(b, d)?)),
            Expr::Not(a) => Some(!self.predicate(a, d)?),
            Expr::Binary(op @ (BinOp::In | BinOp::NotIn), a, b) => {
                let Operand::Col(c) = self.operand(a)? else {
                    return None;
                };
                let items = match self.constant(b)? {
                    Value::Array(items) => items,
                    _ => return None,
                };
                let mut list = Vec::new();
                let mut null = false;
                for item in &items {
                    match item {
                        Value::Null => null = true,
                        v if class_of(v) == Some(c.class) => list.push(lit(scalar(v)?)),
                        // Values of another type never equal the column's.
                        _ => {}
                    }
                }
                let mut found = if list.is_empty() {
                    lit(false)
                } else {
                    c.expr
                        .clone()
                        .is_not_null()
                        .and(c.expr.clone().in_list(list, false))
                };
                if null {
                    found = found.or(c.expr.clone().is_null());
                }
                Some(if *op == BinOp::In { found } else { !found })
            }
            Expr::Binary(
                op @ (BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge),
                a,
                b,
            ) => self.comparison(*op, self.operand(a)?, self.operand(b)?),
            Expr::Bool(b) => Some(lit(*b)),
            other => match self.operand(other)? {
                Operand::Const(v) => Some(lit(super::value::truthy(&v))),
                Operand::Col(c) => Some(match c.class {
                    Class::Bool => c.expr.is_true(),
                    Class::Number => c.expr.clone().is_not_null().and(c.expr.not_eq(lit(0i64))),
                    Class::Text => c.expr.clone().is_not_null().and(c.expr.not_eq(lit(""))),
                }),
            },
        }
    }

    fn comparison(&self, op: BinOp, a: Operand, b: Operand) -> Option<Dx> {
        match (a, b) {
            (Operand::Const(x), Operand::Const(y)) => {
                let o = compare(&x, &y);
                Some(lit(match op {
                    BinOp::Eq => o.is_eq(),
                    BinOp::Ne => o.is_ne(),
                    BinOp::Lt => o.is_lt(),
                    BinOp::Le => o.is_le(),
                    BinOp::Gt => o.is_gt(),
                    _ => o.is_ge(),
                }))
            }
            (Operand::Const(x), Operand::Col(c)) => {
                self.comparison(flip(op), Operand::Col(c), Operand::Const(x))
            }
            (Operand::Col(c), Operand::Const(Value::Null)) => {
                let e = c.expr;
                Some(match op {
                    BinOp::Eq | BinOp::Le => e.is_null(),
                    BinOp::Ne | BinOp::Gt => e.is_not_null(),
                    BinOp::Lt => lit(false),
                    _ => lit(true),
                })
            }
            (Operand::Col(c), Operand::Const(v)) => {
                if class_of(&v)? != c.class {
                    return None;
                }
                let (e, k) = (c.expr, lit(scalar(&v)?));
                Some(match op {
                    BinOp::Eq => e.clone().is_not_null().and(e.eq(k)),
                    BinOp::Ne => e.clone().is_null().or(e.not_eq(k)),
                    BinOp::Lt => e.clone().is_null().or(e.lt(k)),
                    BinOp::Le => e.clone().is_null().or(e.lt_eq(k)),
                    BinOp::Gt => e.clone().is_not_null().and(e.gt(k)),
                    _ => e.clone().is_not_null().and(e.gt_eq(k)),
                })
            }
            (Operand::Col(x), Operand::Col(y)) => {
                if x.class != y.class {
                    return None;
                }
                let (a, b) = (x.expr, y.expr);
                let both = |a: &Dx, b: &Dx| a.clone().is_not_null().and(b.clone().is_not_null());
                Some(match op {
                    BinOp::Eq => binary_expr(a, Operator::IsNotDistinctFrom, b),
                    BinOp::Ne => binary_expr(a, Operator::IsDistinctFrom, b),
                    BinOp::Lt => (a.clone().is_null().and(b.clone().is_not_null()))
                        .or(both(&a, &b).and(a.lt(b))),
                    BinOp::Le => a
                        .clone()
                        .is_null()
                        .or(b.clone().is_not_null().and(a.lt_eq(b))),
                    BinOp::Gt => (b.clone().is_null().and(a.clone().is_not_null()))
                        .or(both(&a, &b).and(a.gt(b))),
                    _ => b
                        .clone()
                        .is_null()
                        .or(a.clone().is_not_null().and(a.gt_eq(b))),
                })
            }
        }
    }

    /// A column, a collected variable or a constant.
    fn operand(&self, e: &Expr) -> Option<Operand> {
        if let Some(c) = self.column_of(e) {
            return Some(Operand::Col(c));
        }
        self.constant(e).map(Operand::Const)
    }

    /// A constant expression's value: literals, bind parameters, arrays of them.
    fn constant(&self, e: &Expr) -> Option<Value> {
        if let Some(v) = literal(e) {
            return Some(v);
        }
        Some(match e {
            Expr::Bind(n) => self.ev.param(n)?.clone(),
            Expr::Neg(x) => match self.constant(x)? {
                Value::Number(n) => num(-n.as_f64()?),
                _ => return None,
            },
            Expr::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.constant(i))
                    .collect::<Option<_>>()?,
            ),
            _ => return None,
        })
    }

    /// `x.col` of a table variable, or a collected variable.
    fn column_of(&self, e: &Expr) -> Option<Col> {
        match (&self.collected, e) {
            (Some(vars), Expr::Name(n)) => vars.get(n).cloned(),
            (None, Expr::Attr(base, attr)) => {
                let Expr::Name(n) = base.as_ref() else {
                    return None;
                };
                let var = self.vars.iter().find(|v| &v.name == n)?;
                attribute(var, attr)
            }
            _ => None,
        }
    }

    /// `COLLECT` as an aggregate (with the order of its groups), or `None` when it does
    /// not fit.
    fn collect(
        &mut self,
        b: LogicalPlanBuilder,
        groups: &[(String, Expr)],
        aggregates: &[(String, Expr)],
        count_into: &Option<String>,
    ) -> Result<Option<(LogicalPlanBuilder, Vec<SortExpr>)>> {
        let mut names = BTreeSet::new();
        let mut out = BTreeMap::new();
        let mut group_exprs = Vec::new();
        let mut order = Vec::new();
        for (i, (name, e)) in groups.iter().enumerate() {
            let Some(c) = self.column_of(e).filter(|c| c.exact) else {
                return Ok(None);
            };
            let g = format!("g{i}");
            group_exprs.push(c.expr.alias(&g));
            order.push(Dx::Column(Column::from_name(&g)).sort(true, true));
            out.insert(
                name.clone(),
                Col {
                    expr: Dx::Column(Column::from_name(&g)),
                    class: c.class,
                    exact: true,
                    post: Post::Raw,
                },
            );
            names.insert(name.clone());
        }
        let mut aggr_exprs = Vec::new();
        for (i, (name, e)) in aggregates.iter().enumerate() {
            let Expr::Call(f, args) = e else {
                return Ok(None);
            };
            let a = format!("a{i}");
            let arg = match args.as_slice() {
                [] => None,
                [x] => Some(match self.column_of(x) {
                    Some(c) => c,
                    None => return Ok(None),
                }),
                _ => return Ok(None),
            };
            let (expr, class, exact, post) = match (f.as_str(), arg) {
                // LENGTH counts every row, nulls too.
                ("COUNT" | "LENGTH", _) => (count_all(), Class::Number, true, Post::Raw),
                // The sum of no numbers is 0 (and sorts and filters as 0).
                ("SUM", Some(c)) if c.class == Class::Number => (
                    coalesce(vec![sum(cast(c.expr, DataType::Float64)), lit(0.0)]),
                    Class::Number,
                    true,
                    Post::Number,
                ),
                ("AVG" | "AVERAGE", Some(c)) if c.class == Class::Number => (
                    avg(cast(c.expr, DataType::Float64)),
                    Class::Number,
                    true,
                    Post::Number,
                ),
                ("MIN" | "MAX", Some(c)) if c.class != Class::Bool => {
                    let e = if f == "MIN" { min(c.expr) } else { max(c.expr) };
                    (e, c.class, c.exact, Post::Raw)
                }
                _ => return Ok(None),
            };
            aggr_exprs.push(expr.alias(&a));
            out.insert(
                name.clone(),
                Col {
                    expr: Dx::Column(Column::from_name(&a)),
                    class,
                    exact,
                    post,
                },
            );
            names.insert(name.clone());
        }
        if let Some(n) = count_into {
            aggr_exprs.push(count_all().alias("n"));
            out.insert(
                n.clone(),
                Col {
                    expr: Dx::Column(Column::from_name("n")),
                    class: Class::Number,
                    exact: true,
                    post: Post::Raw,
                },
            );
            names.insert(n.clone());
        }
        // Two variables of one name: the interpreter's rules, not ours.
        if names.len() != groups.len() + aggregates.len() + usize::from(count_into.is_some()) {
            return Ok(None);
        }
        let b = b.aggregate(group_exprs, aggr_exprs).map_err(plan_error)?;
        self.collected = Some(out);
        Ok(Some((b, order)))
    }

    /// `SORT` keys (ascending: nulls first, as null is the smallest value).
    fn sort_keys(&self, keys: &[(Expr, bool)]) -> Option<Vec<SortExpr>> {
        keys.iter()
            .map(|(e, asc)| Some(self.column_of(e)?.expr.sort(*asc, *asc)))
            .collect()
    }

    /// `LIMIT` as (skip, fetch) when both are constant whole numbers.
    fn limit(&self, offset: Option<&Expr>, count: &Expr) -> Option<(usize, usize)> {
        // DataFusion takes limits as i64.
        let whole = |e: &Expr| match self.constant(e)? {
            Value::Number(n) => n
                .as_u64()
                .filter(|&n| n <= i64::MAX as u64)
                .map(|n| n as usize),
            _ => None,
        };
        Some((offset.map_or(Some(0), whole)?, whole(count)?))
    }

    /// The plan's output columns and how each row binds the variables `rest` reads.
    fn outputs(&self, rest: &Query) -> (Vec<Dx>, Vec<Bind>) {
        let mut projection = Vec::new();
        let mut binds = Vec::new();
        let mut out = |e: Dx| {
            projection.push(e.alias(format!("o{}", projection.len())));
            projection.len() - 1
        };
        if let Some(vars) = &self.collected {
            for (name, c) in vars {
                binds.push(Bind::Value {
                    name: name.clone(),
                    column: out(c.expr.clone()),
                    post: c.post,
                });
            }
            return (projection, binds);
        }
        let reads = reads(rest);
        // `COLLECT ... INTO` keeps every variable of its rows whole.
        let into = rest.ops.iter().any(|op| {
            matches!(
                op,
                Op::Collect {
                    into: Some(_),
                    into_expr: None,
                    ..
                }
            )
        });
        for (i, v) in self.vars.iter().enumerate() {
            let read = if into {
                Some(&None)
            } else {
                reads.get(&v.name)
            };
            match read {
                Some(Some(attrs))
                    if attrs.iter().all(|a| {
                        matches!(a.as_str(), "_id" | "_urn")
                            || attribute(v, a).is_some_and(|c| c.exact)
                    }) =>
                {
                    let mut cols = vec![("_key".to_owned(), out(column(&v.alias, "id")))];
                    for a in attrs {
                        if let Some(c) = attribute(v, a).filter(|_| a != "_key") {
                            cols.push((a.clone(), out(c.expr)));
                        }
                    }
                    binds.push(Bind::Attrs {
                        var: i,
                        attrs: cols,
                    });
                }
                // Not read at all: the key keeps the row count right and costs little.
                None => binds.push(Bind::Attrs {
                    var: i,
                    attrs: vec![("_key".to_owned(), out(column(&v.alias, "id")))],
                }),
                _ => binds.push(Bind::Row {
                    var: i,
                    key: out(column(&v.alias, "id")),
                }),
            }
        }
        (projection, binds)
    }

    /// Output rows as variable bindings.
    fn bind(&self, batches: &[RecordBatch], binds: &[Bind]) -> Result<Vec<Scope>> {
        let mut rows = Vec::new();
        // Cells as SQL answers show them (the plan's columns are never JSON text).
        let cell = |a: &ArrayRef, r: usize| crate::encode::cell(a.as_ref(), r, false);
        for batch in batches {
            let columns = batch.columns();
            for r in 0..batch.num_rows() {
                let mut scope = Scope::new();
                for bind in binds {
                    match bind {
                        Bind::Value { name, column, post } => {
                            let v = match (post, cell(&columns[*column], r)) {
                                (Post::Number, Value::Number(n)) => num(n.as_f64().unwrap_or(0.0)),
                                (_, v) => v,
                            };
                            scope.insert(name.clone(), v);
                        }
                        Bind::Row { var, key } => {
                            let v = &self.vars[*var];
                            let key = cell(&columns[*key], r);
                            let key = key.as_str().unwrap_or_default();
                            let urn = format!("urn:themis:relational:{}:{key}", v.ns);
                            scope.insert(v.name.clone(), self.ev.row_value(&urn)?);
                        }
                        Bind::Attrs { var, attrs } => {
                            let v = &self.vars[*var];
                            let mut o = Map::new();
                            for (name, column) in attrs {
                                let value = cell(&columns[*column], r);
                                if name == "_key" {
                                    let key = value.as_str().unwrap_or_default();
                                    o.insert("_id".into(), Value::from(format!("{}/{key}", v.ns)));
                                    o.insert(
                                        "_urn".into(),
                                        Value::from(format!(
                                            "urn:themis:relational:{}:{key}",
                                            v.ns
                                        )),
                                    );
                                }
                                o.insert(name.clone(), value);
                            }
                            scope.insert(v.name.clone(), Value::Object(o));
                        }
                    }
                }
                rows.push(scope);
            }
        }
        Ok(rows)
    }
}

/// Attribute `attr` of a table variable as a column: `_key`, `_rev` or a declared column of
/// a type the plan compares as AQL does.
fn attribute(var: &Var, attr: &str) -> Option<Col> {
    let (name, class, exact) = match attr {
        "_key" => ("id", Class::Text, true),
        "_rev" => ("_revision", Class::Number, true),
        // Made from the key (a declared column of that name is hidden, as in the interpreter).
        "_id" | "_urn" => return None,
        a if themis_materializers::namespaces::IMPLICIT_COLUMNS.contains(&a) => return None,
        a => {
            let field = var.schema.field_with_name(a).ok()?;
            let (class, exact) = match field.data_type() {
                DataType::Boolean => (Class::Bool, true),
                DataType::Int64 => (Class::Number, true),
                DataType::Float64 => (Class::Number, false),
                DataType::Utf8View => (Class::Text, true),
                // Timestamps (stored as text or numbers) and JSON columns.
                _ => return None,
            };
            (a, class, exact)
        }
    };
    let expr = column(&var.alias, name);
    // Arrow orders and compares floats totally (-0.0 < 0.0); AQL holds them equal. Adding
    // 0.0 turns -0.0 into 0.0 and changes nothing else.
    let expr = if exact { expr } else { expr + lit(0.0) };
    Some(Col {
        expr,
        class,
        exact,
        post: Post::Raw,
    })
}

fn flip(op: BinOp) -> BinOp {
    match op {
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        other => other,
    }
}

fn flatten_and<'q>(e: &'q Expr, out: &mut Vec<&'q Expr>) {
    match e {
        Expr::Binary(BinOp::And, a, b) => {
            flatten_and(a, out);
            flatten_and(b, out);
        }
        other => out.push(other),
    }
}

fn class_of(v: &Value) -> Option<Class> {
    match v {
        Value::Bool(_) => Some(Class::Bool),
        Value::Number(_) => Some(Class::Number),
        Value::String(_) => Some(Class::Text),
        _ => None,
    }
}

fn scalar(v: &Value) -> Option<datafusion::scalar::ScalarValue> {
    use datafusion::scalar::ScalarValue;
    Some(match v {
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ScalarValue::Int64(Some(i)),
            None => ScalarValue::Float64(Some(n.as_f64()?)),
        },
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        _ => return None,
    })
}

/// Per variable the rest of a query reads: `Some(attributes)` when only `v.attr`, `None` in
/// the map's value when it reads more (the variable itself, `v[...]`, or it is rebound).
fn reads(q: &Query) -> BTreeMap<String, Option<BTreeSet<String>>> {
    fn expr(e: &Expr, out: &mut BTreeMap<String, Option<BTreeSet<String>>>) {
        match e {
            Expr::Attr(base, attr) => {
                if let Expr::Name(n) = base.as_ref() {
                    if let Some(set) = out
                        .entry(n.clone())
                        .or_insert_with(|| Some(BTreeSet::new()))
                    {
                        set.insert(attr.clone());
                    }
                } else {
                    expr(base, out);
                }
            }
            Expr::Name(n) => {
                out.insert(n.clone(), None);
            }
            Expr::Array(items) | Expr::Call(_, items) => items.iter().for_each(|i| expr(i, out)),
            Expr::Object(pairs) => pairs.iter().for_each(|(k, v)| {
                expr(k, out);
                expr(v, out);
            }),
            Expr::Index(a, b) | Expr::Expand(a, b) | Expr::Binary(_, a, b) => {
                expr(a, out);
                expr(b, out);
            }
            Expr::Not(a) | Expr::Neg(a) => expr(a, out),
            Expr::Ternary(a, b, c) => {
                expr(a, out);
                expr(b, out);
                expr(c, out);
            }
            Expr::Subquery(q) => query(q, out),
            Expr::Null
            | Expr::Bool(_)
            | Expr::Int(_)
            | Expr::Float(_)
            | Expr::Str(_)
            | Expr::Bind(_)
            | Expr::CollectionBind(_)
            | Expr::Current => {}
        }
    }
    fn query(q: &Query, out: &mut BTreeMap<String, Option<BTreeSet<String>>>) {
        for op in &q.ops {
            for e in op.exprs() {
                expr(e, out);
            }
        }
        // A variable bound again (FOR, LET, COLLECT) may be read whole under that name.
        for op in &q.ops {
            let bound: Vec<&String> = match op {
                Op::For { vars, .. } => vars.iter().collect(),
                Op::Let(n, _) => vec![n],
                Op::Collect {
                    groups,
                    aggregates,
                    into,
                    count_into,
                    ..
                } => groups
                    .iter()
                    .chain(aggregates)
                    .map(|(n, _)| n)
                    .chain(into)
                    .chain(count_into)
                    .collect(),
                _ => Vec::new(),
            };
            for n in bound {
                out.insert(n.clone(), None);
            }
        }
        expr(&q.ret, out);
    }
    let mut out = BTreeMap::new();
    query(q, &mut out);
    out
}
