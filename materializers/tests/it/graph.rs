//! The graph view against a reference model on random graphs: traversals (every depth range,
//! direction and label filter) reach exactly the vertices a plain BFS over the model reaches,
//! at the same depths, with valid paths; shortest paths by hops and by weight equal a plain
//! Dijkstra's distances; vertex deletes remove edges in both directions across shards;
//! restart and rebuild keep the digests.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use themis_log::event::{EventInput, Op};
use themis_log::{Token, Urn};
use themis_materializers::Materializer;
use themis_materializers::graph::{Direction, PathSearch, Traversal};
use themis_storage::MemoryDisk;

use crate::{append_all, digests, open_with as open, wait_all};

fn v(i: usize) -> String {
    format!("urn:themis:graph:g:v{i}")
}

fn link(from: usize, to: usize, label: &str, weight: u32, unlink: bool) -> EventInput {
    let mut e = crate::input(
        &v(from),
        if unlink { Op::Unlink } else { Op::Link },
        None,
        (!unlink).then(|| json!({"w": weight})),
    );
    e.to = Some(v(to));
    e.label = Some(label.to_owned());
    e
}

/// The model: live vertices and edges (from, label, to) → weight.
#[derive(Debug, Default)]
struct Model {
    live: BTreeSet<usize>,
    edges: BTreeMap<(usize, String, usize), u32>,
}

impl Model {
    fn next(&self, at: usize, direction: Direction, labels: &[String]) -> Vec<(usize, u32)> {
        let ok = |l: &String| labels.is_empty() || labels.contains(l);
        let mut out = Vec::new();
        for ((a, l, b), w) in &self.edges {
            if !ok(l) || !self.live.contains(a) || !self.live.contains(b) {
                continue;
            }
            if *a == at && matches!(direction, Direction::Outbound | Direction::Any) {
                out.push((*b, *w));
            }
            if *b == at && matches!(direction, Direction::Inbound | Direction::Any) {
                out.push((*a, *w));
            }
        }
        out
    }

    fn bfs(
        &self,
        start: usize,
        max: usize,
        d: Direction,
        labels: &[String],
    ) -> BTreeMap<usize, usize> {
        let mut depth = BTreeMap::new();
        if !self.live.contains(&start) {
            return depth;
        }
        depth.insert(start, 0);
        let mut queue = VecDeque::from([start]);
        while let Some(at) = queue.pop_front() {
            let here = depth[&at];
            if here == max {
                continue;
            }
            for (n, _) in self.next(at, d, labels) {
                if let std::collections::btree_map::Entry::Vacant(e) = depth.entry(n) {
                    e.insert(here + 1);
                    queue.push_back(n);
                }
            }
        }
        depth
    }

    fn dijkstra(&self, from: usize, to: usize, d: Direction, weighted: bool) -> Option<f64> {
        if !self.live.contains(&from) || !self.live.contains(&to) {
            return None;
        }
        let mut dist: BTreeMap<usize, f64> = BTreeMap::from([(from, 0.0)]);
        let mut done = BTreeSet::new();
        loop {
            let (&at, &here) = dist
                .iter()
                .filter(|(k, _)| !done.contains(*k))
                .min_by(|a, b| a.1.total_cmp(b.1))?;
            if at == to {
                return Some(here);
            }
            done.insert(at);
            for (n, w) in self.next(at, d, &[]) {
                let nd = here + if weighted { f64::from(w) } else { 1.0 };
                if dist.get(&n).is_none_or(|&old| nd < old) {
                    dist.insert(n, nd);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Link(usize, usize, u8, u32),
    Unlink(usize, usize, u8),
    Delete(usize),
}

fn steps(n: usize) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        8 => (0..n, 0..n, 0..2u8, 0..5u32).prop_map(|(a, b, l, w)| Step::Link(a, b, l, w)),
        1 => (0..n, 0..n, 0..2u8).prop_map(|(a, b, l)| Step::Unlink(a, b, l)),
        1 => (0..n).prop_map(Step::Delete),
    ];
    prop::collection::vec(step, 1..80)
}

const LABELS: [&str; 2] = ["knows", "likes"];
const N: usize = 16;

async fn check(views: &Materializer, model: &Model) {
    let t = |start, min, max, direction, labels: &[&str]| Traversal {
        start: Urn::parse(&v(start)).unwrap(),
        min_depth: min,
        max_depth: max,
        direction,
        labels: labels.iter().map(|s| s.to_string()).collect(),
        limit: 1000,
    };
    for start in 0..N {
        for direction in [Direction::Outbound, Direction::Inbound, Direction::Any] {
            for labels in [&[][..], &["knows"][..]] {
                for (min, max) in [(0, 3), (1, 1), (2, 3)] {
                    let labels_owned: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
                    let expected: BTreeMap<String, usize> = model
                        .bfs(start, max, direction, &labels_owned)
                        .into_iter()
                        .filter(|(_, d)| *d >= min)
                        .map(|(k, d)| (v(k), d))
                        .collect();
                    let query = t(start, min, max, direction, labels);
                    let (got, _) = views
                        .graph(&Token::new(), Duration::from_secs(30), |g| {
                            g.traverse(&query)
                        })
                        .await
                        .expect("traverse");
                    let depths: BTreeMap<String, usize> = got
                        .vertices
                        .iter()
                        .map(|r| (r.urn.clone(), r.depth))
                        .collect();
                    assert_eq!(
                        depths, expected,
                        "{start} {direction:?} {labels:?} {min}..{max}"
                    );
                    assert_eq!(depths.len(), got.vertices.len(), "each vertex once");
                    for r in &got.vertices {
                        assert_eq!(r.path.len(), r.depth + 1);
                        assert_eq!(r.path.first(), Some(&v(start)));
                        assert_eq!(r.path.last(), Some(&r.urn));
                        if let Some(e) = &r.edge {
                            assert!(e.from == r.urn || e.to == r.urn);
                        }
                    }
                }
            }
        }
    }
    for from in 0..N {
        for to in 0..N {
            for weighted in [false, true] {
                let search = PathSearch {
                    from: Urn::parse(&v(from)).unwrap(),
                    to: Urn::parse(&v(to)).unwrap(),
                    direction: Direction::Outbound,
                    labels: Vec::new(),
                    weight: weighted.then(|| "w".to_owned()),
                };
                let (got, _) = views
                    .graph(&Token::new(), Duration::from_secs(30), |g| {
                        g.shortest_path(&search)
                    })
                    .await
                    .expect("shortest path");
                let expected = model.dijkstra(from, to, Direction::Outbound, weighted);
                assert_eq!(
                    got.as_ref().map(|p| p.distance),
                    expected,
                    "{from}->{to} {weighted}"
                );
                if let Some(p) = got {
                    assert_eq!(p.vertices.len(), p.edges.len() + 1);
                    let mut sum = 0.0;
                    for (i, e) in p.edges.iter().enumerate() {
                        assert_eq!((&e.from, &e.to), (&p.vertices[i].0, &p.vertices[i + 1].0));
                        sum += if weighted {
                            e.data["w"].as_f64().unwrap()
                        } else {
                            1.0
                        };
                    }
                    assert_eq!(sum, p.distance);
                }
            }
        }
    }
}

async fn run(steps: Vec<Step>) {
    let disk = MemoryDisk::new();
    let (log, views) = open(&disk, 4, None).await;
    let mut model = Model::default();
    let mut inputs: Vec<EventInput> = (0..N)
        .map(|i| crate::input(&v(i), Op::Put, None, Some(json!({"i": i}))))
        .collect();
    model.live.extend(0..N);
    let mut token = append_all(&log, std::mem::take(&mut inputs)).await;
    for step in steps {
        let input = match step {
            Step::Link(a, b, l, w) => {
                if !model.live.contains(&a) {
                    continue; // linking from a deleted vertex is not part of this model
                }
                model.edges.insert((a, LABELS[l as usize].into(), b), w);
                link(a, b, LABELS[l as usize], w, false)
            }
            Step::Unlink(a, b, l) => {
                model.edges.remove(&(a, LABELS[l as usize].into(), b));
                link(a, b, LABELS[l as usize], 0, true)
            }
            Step::Delete(a) => {
                model.live.remove(&a);
                model.edges.retain(|(x, _, y), _| *x != a && *y != a);
                crate::input(&v(a), Op::Delete, None, None)
            }
        };
        for p in append_all(&log, vec![input]).await.iter() {
            token.observe(p);
        }
    }
    // Digests are compared at the whole applied log of every shard.
    let token = crate::applied(&log);
    wait_all(&views, &token).await;
    check(&views, &model).await;
    let before = digests(&views);
    views.rebuild("graph", None).expect("rebuild");
    wait_all(&views, &token).await;
    assert_eq!(digests(&views), before, "after a rebuild");
    views.shutdown().await.expect("shutdown");
    log.shutdown().await;
    drop(views);
    drop(log);
    let (log, views) = open(&disk, 4, None).await;
    wait_all(&views, &token).await;
    assert_eq!(digests(&views), before, "after a restart");
    check(&views, &model).await;
    views.shutdown().await.expect("shutdown");
    log.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn traversals_and_shortest_paths_match_a_reference_on_random_graphs(steps in steps(N)) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(steps));
    }
}

async fn neighbours(views: &Materializer, token: Token) -> usize {
    let t = Traversal {
        start: Urn::parse(&v(0)).unwrap(),
        min_depth: 1,
        max_depth: 1,
        direction: Direction::Outbound,
        labels: Vec::new(),
        limit: 10,
    };
    views
        .graph(&token, Duration::from_secs(30), |g| g.traverse(&t))
        .await
        .unwrap()
        .0
        .vertices
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)] // real sleeps so that commit times differ
async fn a_recreated_vertex_starts_without_the_edges_other_shards_kept() {
    let disk = MemoryDisk::new();
    let (log, views) = open(&disk, 4, None).await;
    // Two vertices in different shards.
    let (a, b) = (0..)
        .map(|i| (v(0), v(i + 1)))
        .find(|(a, b)| {
            log.shard_id_for(&Urn::parse(a).unwrap()) != log.shard_id_for(&Urn::parse(b).unwrap())
        })
        .unwrap();
    let b_index: usize = b.rsplit('v').next().unwrap().parse().unwrap();
    // Read at everything appended so far: a token covers only the shards its appends touched.
    let mut token = append_all(
        &log,
        vec![
            crate::input(&a, Op::Put, None, Some(json!({}))),
            crate::input(&b, Op::Put, None, Some(json!({}))),
        ],
    )
    .await;
    token.merge(&append_all(&log, vec![link(0, b_index, "knows", 1, false)]).await);
    token.merge(
        &append_all(
            &log,
            vec![crate::input(&b, Op::Patch, None, Some(json!({"x": 1})))],
        )
        .await,
    );
    assert_eq!(neighbours(&views, token.clone()).await, 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    token.merge(&append_all(&log, vec![crate::input(&b, Op::Delete, None, None)]).await);
    assert_eq!(neighbours(&views, token.clone()).await, 0, "target gone");
    tokio::time::sleep(Duration::from_millis(5)).await;
    token.merge(&append_all(&log, vec![crate::input(&b, Op::Put, None, Some(json!({})))]).await);
    assert_eq!(
        neighbours(&views, token.clone()).await,
        0,
        "re-created after the link"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    token.merge(&append_all(&log, vec![link(0, b_index, "knows", 1, false)]).await);
    assert_eq!(neighbours(&views, token).await, 1, "linked again");
    views.shutdown().await.expect("shutdown");
    log.shutdown().await;
}
