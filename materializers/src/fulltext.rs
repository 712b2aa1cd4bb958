//! The fulltext view: tantivy indexes of the text fields of document and relational
//! namespaces that declare `text_fields`, per (view, shard, namespace), kept by the state
//! views themselves ([`TextIndexed`] wraps the document and relational views), so an index
//! always reflects exactly the state its view holds at a watermark.
//!
//! - While a view's worker applies a batch it records, for every resource of a namespace with
//!   text fields, its new state; after the batch commits ([`View::committed`]) those changes
//!   go to the index writer (delete by URN, then add the document unless it was deleted), and
//!   the writer's content is then the view's state at the batch's LSN.
//! - A tantivy commit makes the writer's content searchable: at most a second after a change,
//!   after 10,000 changes, at shutdown, and on demand when a search needs a position the
//!   searchable content does not cover yet (read-your-writes). Each commit records its LSN in
//!   tantivy's commit payload.
//! - After a restart, an index opened from disk is brought to its view's state by re-indexing
//!   the resources whose last change is after the committed LSN (the state records each
//!   resource's LSN, tombstones included); without a usable index it is built from the state.
//!   The log replays anything after the view's own watermark as usual.
//! - A namespace's config lives in one shard and its resources in every shard, with no order
//!   between shards: a replica may apply resources before it applies their config (a restarted
//!   node replays its shards in any order; a client may also write before it declares). Such a
//!   namespace is remembered as waiting, and when the view of the config's shard applies a
//!   config put (the registry has applied it by then: [`View::reads_configs`]), every waiting
//!   index of that namespace is built from its shard's state.
//!
//! Scores: BM25 (k1 1.2, b 0.75) with statistics combined over every shard's index of the
//! namespace: document count, each field's token count and each term's document frequency
//! are sums over the shards, so a document scores the same whichever shard holds it. Deleted
//! and replaced documents count in term statistics until tantivy merges their segments away
//! (as in Lucene).
//!
//! Queries use tantivy's syntax: terms (OR by default), `+must`, `-must_not`, `AND`, `OR`,
//! `NOT`, parentheses, `"phrases"`, `"phrase prefix"*`, `prefix*`, `field:term`, `term^2`.
//! Prefixes are ours: a single-term prefix matches every term starting with it at a constant
//! score (as Lucene rewrites prefix queries; tantivy's parser takes phrase prefixes only), and
//! a phrase prefix becomes one phrase per expansion of its last word (at most 50, over every
//! shard's terms), scored as phrases with the combined statistics (tantivy's phrase-prefix
//! query would use one shard's statistics).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadTransaction, WriteTransaction};
use serde_json::Value;
use tantivy::collector::TopDocs;
use tantivy::query::{
    Bm25StatisticsProvider, BooleanQuery, BoostQuery, Occur, PhrasePrefixQuery, Query, QueryParser,
};
use tantivy::query_grammar::{Delimiter, UserInputAst, UserInputLeaf};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value as _,
};
use tantivy::tokenizer::TokenStream as _;
use tantivy::tokenizer::{
    LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
};
use themis_log::event::Op;
use themis_log::{CommittedEntry, Model, ShardId};

use crate::document::{Document, StateView};
use crate::namespaces::{self, Language};
use crate::{Error, Result, View, storage};

/// Changes after which a writer commits without being asked.
const COMMIT_AFTER_CHANGES: usize = 10_000;
/// Time after which pending changes are committed without being asked (ms).
const COMMIT_AFTER_MS: u64 = 1_000;
/// The index writer's memory budget (tantivy's minimum is 15 MB per indexing thread).
const WRITER_BYTES: usize = 20_000_000;
/// Deepest nesting of parentheses in a query: tantivy's grammar recurses once per level, on
/// whatever stack the search runs.
pub const QUERY_NESTING_MAX: usize = 32;

/// Terms a prefix expands to at most (tantivy's default for phrase prefixes).
const PREFIX_EXPANSIONS: usize = 50;
/// The field holding each document's URN.
const URN_FIELD: &str = "_urn";

fn analyzer_name(language: Language) -> &'static str {
    match language {
        Language::En => "themis_en",
        Language::De => "themis_de",
        Language::None => "themis_none",
    }
}

fn analyzer(language: Language) -> TextAnalyzer {
    let base = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser);
    let (stop, stem) = match language {
        Language::En => (
            tantivy::tokenizer::Language::English,
            tantivy::tokenizer::Language::English,
        ),
        Language::De => (
            tantivy::tokenizer::Language::German,
            tantivy::tokenizer::Language::German,
        ),
        Language::None => return base.build(),
    };
    base.filter(StopWordFilter::new(stop).expect("tantivy has English and German stop words"))
        .filter(Stemmer::new(stem))
        .build()
}

/// One (view, shard, namespace)'s index.
struct TextIndex {
    fields: Vec<String>,
    language: Language,
    index: Index,
    urn: Field,
    text: Vec<Field>,
    writer: Mutex<Writer>,
    reader: IndexReader,
    /// LSN whose state the reader shows.
    searchable: AtomicU64,
}

struct Writer {
    writer: IndexWriter,
    /// LSN whose state the writer holds.
    lsn: u64,
    /// Changes since the last commit.
    uncommitted: usize,
    /// When the last commit happened (ms, the worker's clock).
    committed_ms: u64,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex")
            .field("fields", &self.fields)
            .field("language", &self.language)
            .field("searchable", &self.searchable)
            .finish_non_exhaustive()
    }
}

fn tantivy_error(e: tantivy::TantivyError) -> Error {
    Error::Storage(format!("fulltext index: {e}"))
}

/// The text of `doc`'s field `name`: a string, or the strings of an array, joined.
fn field_text(doc: &Value, name: &str) -> Option<String> {
    match doc.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let parts: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            (!parts.is_empty()).then(|| parts.join("\n"))
        }
        _ => None,
    }
}

impl TextIndex {
    fn schema(fields: &[String], language: Language) -> (Schema, Field, Vec<Field>) {
        let mut b = Schema::builder();
        let urn = b.add_text_field(URN_FIELD, STRING | STORED);
        let options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer_name(language))
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let text = fields
            .iter()
            .map(|f| b.add_text_field(f, options.clone()))
            .collect();
        (b.build(), urn, text)
    }

    /// Opens the index in `dir` (creating it), or one in memory; `Err` when what is on disk
    /// does not open or does not fit.
    fn open(dir: Option<&PathBuf>, fields: &[String], language: Language) -> Result<TextIndex> {
        let (schema, urn, text) = Self::schema(fields, language);
        let index = match dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(storage)?;
                let directory = tantivy::directory::MmapDirectory::open(d).map_err(storage)?;
                Index::open_or_create(directory, schema).map_err(tantivy_error)?
            }
            None => Index::create_in_ram(schema),
        };
        index
            .tokenizers()
            .register(analyzer_name(language), analyzer(language));
        // A writer of the same directory that is being dropped (a rebuild, a restart in the
        // same process) may still hold the lock for a moment.
        let mut tries = 0;
        let writer: IndexWriter = loop {
            match index.writer_with_num_threads(1, WRITER_BYTES) {
                Ok(w) => break w,
                Err(tantivy::TantivyError::LockFailure(..)) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(tantivy_error(e)),
            }
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(tantivy_error)?;
        let lsn = index
            .load_metas()
            .map_err(tantivy_error)?
            .payload
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        Ok(TextIndex {
            fields: fields.to_vec(),
            language,
            index,
            urn,
            text,
            writer: Mutex::new(Writer {
                writer,
                lsn,
                uncommitted: 0,
                committed_ms: 0,
            }),
            reader,
            searchable: AtomicU64::new(lsn),
        })
    }

    fn put(&self, w: &Writer, urn: &str, doc: Option<&Value>) -> Result<()> {
        w.writer.delete_term(Term::from_field_text(self.urn, urn));
        if let Some(doc) = doc {
            let mut d = TantivyDocument::new();
            d.add_text(self.urn, urn);
            for (name, field) in self.fields.iter().zip(&self.text) {
                if let Some(t) = field_text(doc, name) {
                    d.add_text(*field, t);
                }
            }
            w.writer.add_document(d).map_err(tantivy_error)?;
        }
        Ok(())
    }

    /// Commits what the writer holds and shows it to searches.
    fn commit(&self, w: &mut Writer, now_ms: u64) -> Result<()> {
        let mut prepared = w.writer.prepare_commit().map_err(tantivy_error)?;
        prepared.set_payload(&w.lsn.to_string());
        prepared.commit().map_err(tantivy_error)?;
        self.reader.reload().map_err(tantivy_error)?;
        w.uncommitted = 0;
        w.committed_ms = now_ms;
        self.searchable.store(w.lsn, Ordering::SeqCst);
        Ok(())
    }

    /// A searcher showing at least LSN `at` of the state (committing on demand), and the LSN
    /// it shows.
    fn searcher(&self, at: u64) -> Result<(Searcher, u64)> {
        if self.searchable.load(Ordering::SeqCst) < at {
            let mut w = self.writer.lock().expect("writer lock");
            if w.uncommitted == 0 {
                self.searchable.store(w.lsn, Ordering::SeqCst);
            } else {
                let now = w.committed_ms;
                self.commit(&mut w, now)?;
            }
        }
        // The reader may show more than `searchable` said a moment ago, never less.
        let lsn = self.searchable.load(Ordering::SeqCst);
        Ok((self.reader.searcher(), lsn))
    }

    /// Parses `query` for this index: tantivy's syntax, plus single-term prefixes, with
    /// phrase prefixes expanded over the terms of every shard's index (`all`), so that they
    /// score with the combined statistics too.
    fn parse(&self, query: &str, all: &[Searcher]) -> std::result::Result<Box<dyn Query>, String> {
        let parser = QueryParser::for_index(&self.index, self.text.clone());
        check_nesting(query)?;
        let ast = tantivy::query_grammar::parse_query(query)
            .map_err(|_| format!("the query {query:?} does not parse"))?;
        self.build(&parser, ast, all)
    }

    /// The terms of `field` starting with `prefix` in any of `all`, in order, at most
    /// [`PREFIX_EXPANSIONS`].
    fn expand(
        field: Field,
        prefix: &str,
        all: &[Searcher],
    ) -> std::result::Result<Vec<String>, String> {
        let mut found = std::collections::BTreeSet::new();
        for searcher in all {
            for segment in searcher.segment_readers() {
                let inverted = segment.inverted_index(field).map_err(|e| e.to_string())?;
                let mut stream = inverted
                    .terms()
                    .range()
                    .ge(prefix.as_bytes())
                    .into_stream()
                    .map_err(|e| e.to_string())?;
                let mut taken = 0;
                while stream.advance() && taken < PREFIX_EXPANSIONS {
                    let Ok(term) = std::str::from_utf8(stream.key()) else {
                        continue;
                    };
                    if !term.starts_with(prefix) {
                        break;
                    }
                    found.insert(term.to_owned());
                    taken += 1;
                }
            }
        }
        Ok(found.into_iter().take(PREFIX_EXPANSIONS).collect())
    }

    fn build(
        &self,
        parser: &QueryParser,
        ast: UserInputAst,
        all: &[Searcher],
    ) -> std::result::Result<Box<dyn Query>, String> {
        match ast {
            UserInputAst::Clause(clauses) => {
                let parts = clauses
                    .into_iter()
                    .map(|(occur, a)| {
                        let occur = match occur {
                            Some(tantivy::query_grammar::Occur::Must) => Occur::Must,
                            Some(tantivy::query_grammar::Occur::MustNot) => Occur::MustNot,
                            _ => Occur::Should,
                        };
                        self.build(parser, a, all).map(|q| vec![(occur, q)])
                    })
                    .collect::<std::result::Result<Vec<Vec<_>>, _>>()?;
                let mut parts: Vec<(Occur, Box<dyn Query>)> = parts.into_iter().flatten().collect();
                if !parts.is_empty() && parts.iter().all(|(o, _)| *o == Occur::MustNot) {
                    // `NOT x` alone means every document but those matching x.
                    parts.push((
                        Occur::Must,
                        Box::new(tantivy::query::ConstScoreQuery::new(
                            Box::new(tantivy::query::AllQuery),
                            0.0,
                        )),
                    ));
                }
                Ok(Box::new(BooleanQuery::new(parts)))
            }
            UserInputAst::Boost(inner, boost) => Ok(Box::new(BoostQuery::new(
                self.build(parser, *inner, all)?,
                boost.into_inner() as f32,
            ))),
            UserInputAst::Leaf(leaf) => match *leaf {
                UserInputLeaf::Literal(mut lit)
                    if lit.delimiter == Delimiter::None && lit.phrase.contains('*') =>
                {
                    // tantivy's grammar reads an unquoted `lant*` as the word `lant*`, which
                    // its analyzer would turn into the term `lant`: a trailing `*` makes it
                    // the prefix it says; a `*` elsewhere is refused rather than dropped.
                    let stem = lit.phrase.trim_end_matches('*');
                    if stem.contains('*') || stem.is_empty() {
                        return Err(format!(
                            "{:?}: `*` goes only at the end of a word (a prefix, like `lant*`)",
                            lit.phrase
                        ));
                    }
                    if stem.ends_with('\\') {
                        // `lant\*`: an escaped star, part of the word.
                        return parser
                            .build_query_from_user_input_ast(UserInputAst::Leaf(Box::new(
                                UserInputLeaf::Literal(lit),
                            )))
                            .map_err(|e| format!("{e}"));
                    }
                    lit.phrase = stem.to_owned();
                    lit.prefix = true;
                    self.build(
                        parser,
                        UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(lit))),
                        all,
                    )
                }
                UserInputLeaf::Literal(lit)
                    if lit.prefix && !lit.phrase.trim().contains(char::is_whitespace) =>
                {
                    // `prefix*`: every field (or the one named) whose terms start with it.
                    let prefix = lit.phrase.trim().to_lowercase();
                    if prefix.is_empty() {
                        return Err("a prefix needs at least one character before `*`".into());
                    }
                    let fields: Vec<Field> = match &lit.field_name {
                        Some(name) => vec![self.field(name)?],
                        None => self.text.clone(),
                    };
                    let parts: Vec<(Occur, Box<dyn Query>)> = fields
                        .into_iter()
                        .map(|f| {
                            let q: Box<dyn Query> =
                                Box::new(PhrasePrefixQuery::new(vec![Term::from_field_text(
                                    f, &prefix,
                                )]));
                            (Occur::Should, q)
                        })
                        .collect();
                    Ok(Box::new(BooleanQuery::new(parts)))
                }
                UserInputLeaf::Literal(lit) if lit.prefix => {
                    // `"phrase prefix"*`: tantivy's own query scores with one shard's
                    // statistics, so it becomes phrases, one per expansion of the last term.
                    let fields: Vec<Field> = match &lit.field_name {
                        Some(name) => vec![self.field(name)?],
                        None => self.text.clone(),
                    };
                    let mut analyzer = self
                        .index
                        .tokenizers()
                        .get(analyzer_name(self.language))
                        .ok_or("the index has no analyzer")?;
                    let mut words = Vec::new();
                    analyzer
                        .token_stream(&lit.phrase)
                        .process(&mut |t| words.push(t.text.clone()));
                    let Some(last) = words.pop() else {
                        return Err(format!("the phrase {:?} has no words", lit.phrase));
                    };
                    let mut parts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                    for f in fields {
                        for ending in Self::expand(f, &last, all)? {
                            let mut terms: Vec<Term> =
                                words.iter().map(|w| Term::from_field_text(f, w)).collect();
                            terms.push(Term::from_field_text(f, &ending));
                            let q: Box<dyn Query> = if terms.len() == 1 {
                                Box::new(tantivy::query::TermQuery::new(
                                    terms.pop().expect("one"),
                                    IndexRecordOption::WithFreqs,
                                ))
                            } else {
                                Box::new(tantivy::query::PhraseQuery::new(terms))
                            };
                            parts.push((Occur::Should, q));
                        }
                    }
                    Ok(Box::new(BooleanQuery::new(parts)))
                }
                other => parser
                    .build_query_from_user_input_ast(UserInputAst::Leaf(Box::new(other)))
                    .map_err(|e| format!("{e}")),
            },
        }
    }

    fn field(&self, name: &str) -> std::result::Result<Field, String> {
        self.fields
            .iter()
            .position(|f| f == name)
            .map(|i| self.text[i])
            .ok_or_else(|| {
                format!(
                    "no text field {name:?} (the namespace's text fields: {})",
                    self.fields.join(", ")
                )
            })
    }
}

/// BM25 statistics summed over several shards' searchers.
struct Combined<'a>(&'a [Searcher]);

impl Bm25StatisticsProvider for Combined<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        let mut sum = 0;
        for s in self.0 {
            sum += s.total_num_tokens(field)?;
        }
        Ok(sum)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        let mut sum = 0;
        for s in self.0 {
            sum += Bm25StatisticsProvider::total_num_docs(s)?;
        }
        Ok(sum)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let mut sum = 0;
        for s in self.0 {
            sum += s.doc_freq(term)?;
        }
        Ok(sum)
    }
}

/// One answer of a fulltext search.
#[derive(Debug, Clone, PartialEq)]
pub struct TextHit {
    /// The resource.
    pub urn: String,
    /// Its BM25 score (higher is better).
    pub score: f32,
}

/// A change a batch made to a resource of a namespace with text fields.
#[derive(Debug)]
struct Change {
    ns: String,
    urn: String,
    /// Its state (`None`: deleted).
    doc: Option<Value>,
}

type IndexKey = (&'static str, ShardId, String);

/// Where a namespace's config lives: the shard of `urn:themis:{model}:_namespace:{ns}`.
pub type ConfigShard = Arc<dyn Fn(Model, &str) -> ShardId + Send + Sync>;

/// Per shard, the LSN a search reached.
pub type Reached = Vec<(ShardId, u64)>;

/// Hits of a search with their shards and the resources' states.
pub type TextHits = Vec<(ShardId, TextHit, Value)>;

/// The fulltext indexes of this node.
pub struct Fulltext {
    dir: Option<PathBuf>,
    config_shard: ConfigShard,
    indexes: Mutex<BTreeMap<IndexKey, Arc<TextIndex>>>,
    pending: Mutex<BTreeMap<(&'static str, ShardId), Vec<Change>>>,
    /// Namespaces whose resources a view's shard holds but which had no text config when the
    /// view applied them (or opened): their indexes are built when the view applies a config
    /// of theirs. At most one per namespace and shard of each state view, like the state's
    /// own table of changed namespaces.
    waiting: Mutex<BTreeSet<IndexKey>>,
}

impl std::fmt::Debug for Fulltext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fulltext")
            .field("dir", &self.dir)
            .field("indexes", &self.indexes)
            .finish_non_exhaustive()
    }
}

impl Fulltext {
    /// Indexes kept under `dir` (in memory when `None`); `config_shard` says which shard
    /// holds a namespace's config.
    pub fn new(dir: Option<PathBuf>, config_shard: ConfigShard) -> Fulltext {
        Fulltext {
            dir,
            config_shard,
            indexes: Mutex::default(),
            pending: Mutex::default(),
            waiting: Mutex::default(),
        }
    }

    fn index_dir(&self, kind: &str, shard: ShardId, ns: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| {
            d.join("fulltext")
                .join(kind)
                .join(shard.0.to_string())
                .join(themis_log::urn::namespace_file_name(ns))
        })
    }

    /// Remembers that `shard`'s view `kind` holds resources of `ns` that no index holds
    /// because it had no text config when it applied them.
    fn wait(&self, kind: &'static str, shard: ShardId, ns: &str) {
        if self.index(kind, shard, ns).is_none() {
            self.waiting
                .lock()
                .expect("waiting lock")
                .insert((kind, shard, ns.to_owned()));
        }
    }

    fn index(&self, kind: &'static str, shard: ShardId, ns: &str) -> Option<Arc<TextIndex>> {
        self.indexes
            .lock()
            .expect("indexes lock")
            .get(&(kind, shard, ns.to_owned()))
            .cloned()
    }

    /// Opens (or builds) the index of `ns` from the state `docs` (URN → state), which is at
    /// or after what the index committed.
    fn open_index(
        &self,
        kind: &'static str,
        shard: ShardId,
        ns: &str,
        fields: &[String],
        language: Language,
        docs: &[(String, Document)],
    ) -> Result<Arc<TextIndex>> {
        let dir = self.index_dir(kind, shard, ns);
        let index = match TextIndex::open(dir.as_ref(), fields, language) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(
                    kind,
                    shard = shard.0,
                    ns,
                    "fulltext index does not open ({e}); rebuilding it"
                );
                if let Some(d) = &dir {
                    std::fs::remove_dir_all(d).map_err(storage)?;
                }
                TextIndex::open(dir.as_ref(), fields, language)?
            }
        };
        {
            let mut w = index.writer.lock().expect("writer lock");
            let since = w.lsn;
            let mut changed = 0;
            for (urn, d) in docs {
                if d.lsn > since {
                    index.put(&w, urn, (!d.deleted).then_some(&d.data))?;
                    changed += 1;
                }
            }
            w.lsn = docs
                .iter()
                .map(|(_, d)| d.lsn)
                .max()
                .unwrap_or(0)
                .max(since);
            if changed > 0 || since == 0 {
                index.commit(&mut w, 0)?;
            }
            tracing::debug!(
                kind,
                shard = shard.0,
                ns,
                since,
                changed,
                "fulltext index opened"
            );
        }
        let index = Arc::new(index);
        let key = (kind, shard, ns.to_owned());
        self.waiting.lock().expect("waiting lock").remove(&key);
        self.indexes
            .lock()
            .expect("indexes lock")
            .insert(key, index.clone());
        Ok(index)
    }

    /// Searches `ns` of view `kind` over `shards`, each at least at its LSN in `at`: BM25 with
    /// statistics summed over the shards, the top `k` merged (score, then URN). Returns the
    /// hits with their shards and, per shard, the LSN searched.
    pub fn search(
        &self,
        kind: &'static str,
        ns: &str,
        query: &str,
        k: usize,
        at: &[(ShardId, u64)],
    ) -> Result<(Vec<(ShardId, TextHit)>, Reached)> {
        let mut opened = Vec::new();
        let mut reached = Vec::new();
        for &(shard, lsn) in at {
            match self.index(kind, shard, ns) {
                Some(index) => {
                    let (searcher, shown) = index.searcher(lsn)?;
                    reached.push((shard, shown));
                    opened.push((shard, index, searcher));
                }
                None => reached.push((shard, lsn)),
            }
        }
        let searchers: Vec<Searcher> = opened.iter().map(|p| p.2.clone()).collect();
        let mut parts = Vec::new();
        for (shard, index, searcher) in opened {
            let q = index
                .parse(query, &searchers)
                .map_err(Error::InvalidSearch)?;
            parts.push((shard, index, searcher, q));
        }
        let stats = Combined(&searchers);
        let mut hits = Vec::new();
        for (shard, index, searcher, q) in &parts {
            let top = searcher
                .search_with_statistics_provider(
                    q.as_ref(),
                    &TopDocs::with_limit(k.max(1)).order_by_score(),
                    &stats,
                )
                .map_err(tantivy_error)?;
            for (score, addr) in top {
                let doc: TantivyDocument = searcher.doc(addr).map_err(tantivy_error)?;
                let urn = doc
                    .get_first(index.urn)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                hits.push((*shard, TextHit { urn, score }));
            }
        }
        hits.sort_by(|(_, a), (_, b)| b.score.total_cmp(&a.score).then_with(|| a.urn.cmp(&b.urn)));
        hits.truncate(k);
        Ok((hits, reached))
    }

    /// The URNs of `shard`'s indexes of view `kind` at their writers' LSN (committing first;
    /// for checkers), by namespace.
    pub fn indexed(
        &self,
        kind: &'static str,
        shard: ShardId,
    ) -> Result<BTreeMap<String, Vec<String>>> {
        let indexes = self.of(kind, shard);
        let mut out = BTreeMap::new();
        for (ns, index) in indexes {
            let lsn = index.writer.lock().expect("writer lock").lsn;
            let (searcher, _) = index.searcher(lsn)?;
            let mut urns = Vec::new();
            for (ord, segment) in searcher.segment_readers().iter().enumerate() {
                for doc in segment.doc_ids_alive() {
                    let d: TantivyDocument = searcher
                        .doc(DocAddress::new(ord as u32, doc))
                        .map_err(tantivy_error)?;
                    if let Some(urn) = d.get_first(index.urn).and_then(|v| v.as_str()) {
                        urns.push(urn.to_owned());
                    }
                }
            }
            urns.sort();
            out.insert(ns, urns);
        }
        Ok(out)
    }

    /// The indexes of view `kind` in `shard`, by namespace.
    fn of(&self, kind: &'static str, shard: ShardId) -> Vec<(String, Arc<TextIndex>)> {
        self.indexes
            .lock()
            .expect("indexes lock")
            .iter()
            .filter(|((k, s, _), _)| *k == kind && *s == shard)
            .map(|((_, _, ns), i)| (ns.clone(), i.clone()))
            .collect()
    }

    /// Drops every index (their writers release their directories), at shutdown.
    pub fn close(&self) {
        std::mem::take(&mut *self.indexes.lock().expect("indexes lock"));
    }

    /// Commits every index of `kind` and `shard` whose writer holds more than its readers
    /// show, if `force` or the commit policy says so.
    fn flush(&self, kind: &'static str, shard: ShardId, now_ms: u64, force: bool) -> Result<()> {
        for (_, index) in self.of(kind, shard) {
            let mut w = index.writer.lock().expect("writer lock");
            let behind = w.uncommitted > 0;
            let due = w.uncommitted >= COMMIT_AFTER_CHANGES
                || now_ms.saturating_sub(w.committed_ms) >= COMMIT_AFTER_MS;
            if behind && (force || due) {
                index.commit(&mut w, now_ms)?;
            }
        }
        Ok(())
    }
}

/// A state view (document or relational) with the fulltext indexes of its namespaces.
#[derive(Debug)]
pub struct TextIndexed {
    /// The state view.
    pub state: StateView,
    /// The indexes (shared by both state views).
    pub text: Arc<Fulltext>,
}

impl TextIndexed {
    fn model(&self) -> Model {
        self.state.model()
    }

    fn settings_write(
        &self,
        tx: &WriteTransaction,
        ns: &str,
    ) -> Result<Option<(Vec<String>, Language)>> {
        let shard = (self.text.config_shard)(self.model(), ns);
        Ok(namespaces::get_in_write(tx, shard, self.model(), ns)?.and_then(|r| r.config.text()))
    }

    fn settings_read(
        &self,
        tx: &ReadTransaction,
        ns: &str,
    ) -> Result<Option<(Vec<String>, Language)>> {
        let shard = (self.text.config_shard)(self.model(), ns);
        Ok(namespaces::get(tx, shard, self.model(), ns)?.and_then(|r| r.config.text()))
    }

    /// Builds, from their shards' states, the indexes of `ns` that waited for a config with
    /// text fields, if the registry now has one. Runs inside a write transaction: no other
    /// worker is inside `apply`, and a waiting namespace has no changes pending, so each state
    /// read here is exactly what its view committed.
    fn build_waiting(&self, tx: &WriteTransaction, ns: &str) -> Result<()> {
        let kind = self.kind();
        let shards: Vec<ShardId> = self
            .text
            .waiting
            .lock()
            .expect("waiting lock")
            .iter()
            .filter(|(k, _, n)| *k == kind && n == ns)
            .map(|(_, s, _)| *s)
            .collect();
        if shards.is_empty() {
            return Ok(());
        }
        let Some((fields, language)) = self.settings_write(tx, ns)? else {
            return Ok(());
        };
        for shard in shards {
            let docs = self.state.namespace_in_write(tx, shard, ns)?;
            self.text
                .open_index(kind, shard, ns, &fields, language, &docs)?;
            tracing::debug!(
                kind,
                shard = shard.0,
                ns,
                documents = docs.len(),
                "fulltext index built when its config arrived"
            );
        }
        Ok(())
    }
}

impl View for TextIndexed {
    fn kind(&self) -> &'static str {
        self.state.kind()
    }

    fn apply(&self, tx: &WriteTransaction, shard: ShardId, entry: &CommittedEntry) -> Result<()> {
        self.state.apply(tx, shard, entry)?;
        let kind = self.kind();
        let mut settings: BTreeMap<String, Option<(Vec<String>, Language)>> = BTreeMap::new();
        let mut changes = Vec::new();
        for e in &entry.events {
            let urn = &e.event.urn;
            if urn.model() != self.model() {
                continue;
            }
            if urn.namespace() == namespaces::CONFIG_NAMESPACE && e.event.op == Op::Put {
                // The registry has applied this config (`reads_configs`): resources of its
                // namespace applied before it, here or in other shards, get their indexes.
                self.build_waiting(tx, urn.id())?;
                continue;
            }
            if urn.namespace().starts_with('_')
                || !matches!(e.event.op, Op::Put | Op::Patch | Op::Delete)
            {
                continue;
            }
            let ns = urn.namespace();
            if !settings.contains_key(ns) {
                let found = self.settings_write(tx, ns)?;
                if found.is_none() {
                    self.text.wait(kind, shard, ns);
                }
                settings.insert(ns.to_owned(), found);
            }
            let Some((fields, language)) = settings[ns].clone() else {
                continue;
            };
            if self.text.index(kind, shard, ns).is_none() {
                // First sight of this namespace's config here: build from the state (which
                // already holds this entry; the changes below repeat it harmlessly).
                let docs = self.state.namespace_in_write(tx, shard, ns)?;
                self.text
                    .open_index(kind, shard, ns, &fields, language, &docs)?;
            }
            let doc = self.state.get_in_write(tx, shard, urn.as_str())?;
            changes.push(Change {
                ns: ns.to_owned(),
                urn: urn.as_str().to_owned(),
                doc: doc.filter(|d| !d.deleted).map(|d| d.data),
            });
        }
        if !changes.is_empty() {
            self.text
                .pending
                .lock()
                .expect("pending lock")
                .entry((kind, shard))
                .or_default()
                .extend(changes);
        }
        Ok(())
    }

    fn clear(&self, tx: &WriteTransaction, shard: ShardId) -> Result<()> {
        self.state.clear(tx, shard)?;
        let kind = self.kind();
        self.text
            .indexes
            .lock()
            .expect("indexes lock")
            .retain(|(k, s, _), _| !(*k == kind && *s == shard));
        self.text
            .pending
            .lock()
            .expect("pending lock")
            .remove(&(kind, shard));
        self.text
            .waiting
            .lock()
            .expect("waiting lock")
            .retain(|(k, s, _)| !(*k == kind && *s == shard));
        if let Some(dir) = &self.text.dir {
            let path = dir.join("fulltext").join(kind).join(shard.0.to_string());
            if path.exists() {
                std::fs::remove_dir_all(&path).map_err(storage)?;
            }
        }
        Ok(())
    }

    fn digest(&self, tx: &ReadTransaction, shard: ShardId) -> Result<u64> {
        self.state.digest(tx, shard)
    }

    /// `apply` reads the namespace's text settings, and builds the waiting indexes of a
    /// namespace when it applies the namespace's config put, which it must not see before the
    /// registry has applied it.
    fn reads_configs(&self) -> bool {
        true
    }

    fn open(&self, tx: &ReadTransaction, shard: ShardId) -> Result<()> {
        let kind = self.kind();
        for ns in self.state.namespaces(tx, shard)? {
            if ns.starts_with('_') {
                continue;
            }
            let Some((fields, language)) = self.settings_read(tx, &ns)? else {
                self.text.wait(kind, shard, &ns);
                continue;
            };
            let docs: Vec<(String, Document)> = self
                .state
                .namespace(tx, shard, &ns)?
                .into_iter()
                .map(|r| {
                    (
                        format!("urn:themis:{}:{ns}:{}", self.model(), r.id),
                        r.state,
                    )
                })
                .collect();
            self.text
                .open_index(kind, shard, &ns, &fields, language, &docs)?;
        }
        Ok(())
    }

    fn committed(&self, _db: &Database, shard: ShardId, lsn: u64, _durable: bool, now_ms: u64) {
        let kind = self.kind();
        let changes = self
            .text
            .pending
            .lock()
            .expect("pending lock")
            .remove(&(kind, shard))
            .unwrap_or_default();
        let result = (|| -> Result<()> {
            let indexes = self.text.of(kind, shard);
            for (ns, index) in &indexes {
                let mut w = index.writer.lock().expect("writer lock");
                for c in changes.iter().filter(|c| &c.ns == ns) {
                    index.put(&w, &c.urn, c.doc.as_ref())?;
                    w.uncommitted += 1;
                }
                w.lsn = lsn;
                if w.uncommitted == 0 {
                    // Nothing changed since the last commit: it shows this LSN's state.
                    index.searchable.store(lsn, Ordering::SeqCst);
                }
            }
            self.text.flush(kind, shard, now_ms, false)
        })();
        if let Err(e) = result {
            tracing::error!(kind, shard = shard.0, "fulltext index update failed: {e}");
        }
    }

    fn checkpoint(&self, shard: ShardId, now_ms: u64) {
        if let Err(e) = self.text.flush(self.kind(), shard, now_ms, true) {
            tracing::warn!(shard = shard.0, "fulltext commit at shutdown failed: {e}");
        }
    }
}

/// Refuses queries nested deeper than [`QUERY_NESTING_MAX`] parentheses (outside quotes).
fn check_nesting(query: &str) -> std::result::Result<(), String> {
    let (mut depth, mut quoted, mut escaped) = (0usize, None, false);
    for c in query.chars() {
        match (c, quoted) {
            _ if escaped => escaped = false,
            ('\\', _) => escaped = true,
            ('"' | '\'', None) => quoted = Some(c),
            (q, Some(open)) if q == open => quoted = None,
            ('(', None) => {
                depth += 1;
                if depth > QUERY_NESTING_MAX {
                    return Err(format!(
                        "the query nests parentheses deeper than {QUERY_NESTING_MAX} levels"
                    ));
                }
            }
            (')', None) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}
