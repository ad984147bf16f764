//! The in-memory HNSW graph over the stored vectors, and exact search as its reference.
//!
//! The graph is hnsw_rs's [`Hnsw`] over L2-normalised vectors with [`DotDistance`], `1 - a·b`
//! clamped at 0: on unit vectors that is cosine distance at the price of one dot product, and the
//! clamp keeps rounding from producing the small negative distances that make hnsw_rs's own
//! `DistDot` panic when a query equals an indexed vector. The graph's data id is the
//! [`VectorId`]; the graph cannot delete points, so removed vectors stay in it as tombstones
//! (dropped from results, and gone after the next rebuild).
//!
//! The graph holds no metadata: [`AnnIndex`] keeps the id -> [`VectorMeta`] map beside it.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, PoisonError, RwLock};

use hnsw_rs::prelude::{Distance, Hnsw, Point};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::records::{VectorId, VectorMeta, VectorRecord};

/// Highest number of layers hnsw_rs supports; the level generator rarely uses more than 5.
const MAX_LAYERS: usize = 16;

/// Vectors are inserted into the graph in parallel chunks of this size; progress is reported and
/// cancellation checked between chunks.
const INSERT_CHUNK: usize = 8192;

/// Exact search over a record stream scores this many records at a time in parallel.
const EXACT_BATCH: usize = 4096;

/// The graph type: hnsw_rs over `f32` with our distance. `'static` because the graph owns its
/// vectors (built graphs always do; reloaded ones do too, see [`crate::dump`]).
pub(crate) type Graph = Hnsw<'static, f32, DotDistance>;

/// HNSW construction and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IndexOptions {
    /// Links per point and layer (HNSW's `M`); layer 0 keeps twice as many.
    pub max_nb_connection: usize,
    /// Candidate list size while inserting (HNSW's `efConstruction`).
    pub ef_construction: usize,
    /// Candidate list size while searching (HNSW's `ef`); raised to `k` when `k` is larger.
    pub ef_search: usize,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            max_nb_connection: 16,
            ef_construction: 100,
            ef_search: 64,
        }
    }
}

/// One search result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    /// The stored vector found.
    pub vector_id: VectorId,
    /// What it belongs to.
    pub meta: VectorMeta,
    /// Cosine similarity to the query, at most 1.
    pub similarity: f32,
}

/// `1 - a·b`, clamped at 0: cosine distance for L2-normalised vectors.
#[derive(Debug, Clone, Copy, Default)]
pub struct DotDistance;

impl Distance<f32> for DotDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// Dot product, written so that the compiler vectorises it (sixteen independent accumulators), compiled
/// for AVX-512 or AVX2+FMA when the CPU has them (the build targets plain x86-64, whose SSE registers hold
/// four floats: the graph search spends most of its time here).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { dot_avx512(a, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let chunks_a = a.chunks_exact(16);
    let chunks_b = b.chunks_exact(16);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut lanes = [0.0f32; 16];
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for ((lane, x), y) in lanes.iter_mut().zip(ca).zip(cb) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Returns `vector` scaled to unit L2 norm. `index` names the vector in errors: NaN or infinite
/// components and all-zero vectors cannot be normalised.
pub fn normalise(vector: &[f32], index: usize) -> Result<Vec<f32>> {
    if let Some(position) = vector.iter().position(|x| !x.is_finite()) {
        return Err(StoreError::NonFiniteVector { index, position });
    }
    // f64 so that large finite components cannot overflow the sum of squares.
    let norm = vector
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return Err(StoreError::ZeroVector { index });
    }
    Ok(vector
        .iter()
        .map(|&x| (f64::from(x) / norm) as f32)
        .collect())
}

/// Similarity of a unit query to a unit stored vector, as both search paths report it.
fn similarity(query: &[f32], vector: &[f32]) -> f32 {
    1.0 - DotDistance.eval(query, vector)
}

/// Orders results best first: higher similarity, then lower id (so ties are deterministic).
fn best_first(a: &Neighbour, b: &Neighbour) -> Ordering {
    b.similarity
        .total_cmp(&a.similarity)
        .then(a.vector_id.cmp(&b.vector_id))
}

/// Keeps the `k` best of `candidates`, sorted best first.
fn keep_best(candidates: Vec<Neighbour>, k: usize) -> Vec<Neighbour> {
    keep_first(candidates, k, best_first)
}

/// Keeps the `k` best `(id, similarity)` pairs, sorted best first (same order as [`best_first`]).
fn keep_best_scores(scores: Vec<(VectorId, f32)>, k: usize) -> Vec<(VectorId, f32)> {
    keep_first(scores, k, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)))
}

/// The `k` first items of `items` in `order`, sorted.
fn keep_first<T>(mut items: Vec<T>, k: usize, order: impl Fn(&T, &T) -> Ordering) -> Vec<T> {
    if k == 0 {
        return Vec::new();
    }
    if items.len() > k {
        items.select_nth_unstable_by(k - 1, &order);
        items.truncate(k);
    }
    items.sort_unstable_by(order);
    items
}

/// Brute-force search over a stream of stored vectors (the store's fallback while the graph is
/// rebuilt). Stored vectors are normalised on the fly, so similarities are cosines whatever the
/// stored norm.
pub fn exact_search_records(
    records: impl IntoIterator<Item = Result<VectorRecord>>,
    query: &[f32],
    k: usize,
) -> Result<Vec<Neighbour>> {
    let query = normalise(query, 0)?;
    if k == 0 {
        return Ok(Vec::new());
    }
    let mut best = Vec::new();
    let mut batch = Vec::with_capacity(EXACT_BATCH);
    let mut records = records.into_iter();
    loop {
        batch.clear();
        for record in records.by_ref().take(EXACT_BATCH) {
            batch.push(record?);
        }
        if batch.is_empty() {
            return Ok(best);
        }
        let scored = batch
            .par_iter()
            .map(|record| {
                if record.vector.len() != query.len() {
                    return Err(StoreError::DimensionMismatch {
                        expected: record.vector.len(),
                        got: query.len(),
                    });
                }
                let norm = dot(&record.vector, &record.vector).sqrt();
                let cosine = if norm > 0.0 {
                    dot(&query, &record.vector) / norm
                } else {
                    0.0
                };
                Ok(Neighbour {
                    vector_id: record.id,
                    meta: record.meta,
                    similarity: cosine.min(1.0),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        best.extend(scored);
        best = keep_best(best, k);
    }
}

/// An HNSW graph over stored vectors plus their metadata: the searchable half of the index.
///
/// Inserting and searching both take `&self` and may run concurrently (hnsw_rs locks per point),
/// so a live index behind an `Arc` takes new vectors while it answers queries.
pub struct AnnIndex {
    graph: Graph,
    metas: RwLock<HashMap<VectorId, VectorMeta>>,
    watermark: AtomicU64,
    options: IndexOptions,
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex")
            .field("live_vectors", &self.len())
            .field("graph_points", &self.graph_points())
            .field("watermark", &self.watermark())
            .field("options", &self.options)
            .finish()
    }
}

impl AnnIndex {
    /// An empty graph; `capacity` is a hint of how many vectors will be inserted.
    pub fn new(options: IndexOptions, capacity: usize) -> AnnIndex {
        let graph = Hnsw::new(
            options.max_nb_connection,
            capacity.max(1),
            MAX_LAYERS,
            options.ef_construction,
            DotDistance,
        );
        AnnIndex::from_parts(graph, HashMap::new(), 0, options)
    }

    /// Wraps a graph reloaded from a dump. `metas` must describe the live vectors the graph holds
    /// and `watermark` the highest id inserted into it.
    pub(crate) fn from_parts(
        graph: Graph,
        metas: HashMap<VectorId, VectorMeta>,
        watermark: VectorId,
        options: IndexOptions,
    ) -> AnnIndex {
        AnnIndex {
            graph,
            metas: RwLock::new(metas),
            watermark: AtomicU64::new(watermark),
            options,
        }
    }

    /// Builds a graph from stored vectors (in increasing id order, as the store lists them),
    /// inserting in parallel chunks and calling `progress(done, total)` after each chunk. `total`
    /// is only used for progress reports.
    pub fn build(
        records: impl IntoIterator<Item = Result<VectorRecord>>,
        total: usize,
        options: IndexOptions,
        progress: &dyn Fn(usize, usize),
    ) -> Result<AnnIndex> {
        Self::build_cancellable(records, total, options, progress, &AtomicBool::new(false))
    }

    /// [`AnnIndex::build`], giving up with [`StoreError::Cancelled`] between chunks once `cancel`
    /// is set.
    pub(crate) fn build_cancellable(
        records: impl IntoIterator<Item = Result<VectorRecord>>,
        total: usize,
        options: IndexOptions,
        progress: &dyn Fn(usize, usize),
        cancel: &AtomicBool,
    ) -> Result<AnnIndex> {
        let index = AnnIndex::new(options, total);
        let mut done = 0;
        progress(done, total);
        let mut chunk = Vec::with_capacity(INSERT_CHUNK.min(total.max(1)));
        let mut records = records.into_iter();
        loop {
            chunk.clear();
            for record in records.by_ref().take(INSERT_CHUNK) {
                chunk.push(record?);
            }
            if chunk.is_empty() {
                return Ok(index);
            }
            if cancel.load(AtomicOrdering::Relaxed) {
                return Err(StoreError::Cancelled);
            }
            index.insert(&chunk)?;
            done += chunk.len();
            progress(done, total.max(done));
        }
    }

    /// Inserts stored vectors, normalising them. Records at or below the watermark are already in
    /// the graph and are skipped, so replaying a catch-up is harmless; the rest must come in
    /// increasing id order. A bad vector rejects the call before anything is inserted.
    pub fn insert(&self, records: &[VectorRecord]) -> Result<()> {
        let watermark = self.watermark();
        let fresh: Vec<&VectorRecord> = records.iter().filter(|r| r.id > watermark).collect();
        let Some(last) = fresh.last() else {
            return Ok(());
        };
        let last_id = last.id;
        if let Some(dimension) = self.dimension() {
            for record in &fresh {
                if record.vector.len() != dimension {
                    return Err(StoreError::DimensionMismatch {
                        expected: dimension,
                        got: record.vector.len(),
                    });
                }
            }
        }
        let unit: Vec<Vec<f32>> = fresh
            .par_iter()
            .enumerate()
            .map(|(index, record)| normalise(&record.vector, index))
            .collect::<Result<_>>()?;
        // Metadata first: a search that meets a new point must be able to name it.
        {
            let mut metas = self.metas.write().unwrap_or_else(PoisonError::into_inner);
            metas.extend(fresh.iter().map(|r| (r.id, r.meta)));
        }
        let points: Vec<(&[f32], usize)> = unit
            .iter()
            .zip(&fresh)
            .map(|(vector, record)| (vector.as_slice(), data_id(record.id)))
            .collect();
        if points.len() == 1 {
            self.graph.insert_slice(points[0]);
        } else {
            self.graph.parallel_insert_slice(&points);
        }
        self.watermark.fetch_max(last_id, AtomicOrdering::SeqCst);
        Ok(())
    }

    /// Marks vectors as removed: they stay in the graph but are no longer returned.
    pub fn remove(&self, ids: &[VectorId]) {
        let mut metas = self.metas.write().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            metas.remove(id);
        }
    }

    /// The `k` nearest live vectors to `query` by cosine similarity, best first, through the graph.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbour>> {
        let query = self.prepare_query(query)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        // Over-fetch by the number of tombstones so that removed points cannot crowd out k live
        // results; a rebuild drops the tombstones.
        let tombstones = self.graph_points().saturating_sub(self.len());
        let wanted = k + tombstones;
        let found = self
            .graph
            .search(&query, wanted, self.options.ef_search.max(wanted));
        let metas = self.metas.read().unwrap_or_else(PoisonError::into_inner);
        let results = found
            .into_iter()
            .filter_map(|n| {
                let vector_id = n.d_id as VectorId;
                metas.get(&vector_id).map(|meta| Neighbour {
                    vector_id,
                    meta: *meta,
                    similarity: 1.0 - n.distance,
                })
            })
            .collect();
        Ok(keep_best(results, k))
    }

    /// The exact `k` nearest live vectors to `query`, by brute force over the graph's points: the
    /// reference HNSW is measured against.
    pub fn exact_search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbour>> {
        let query = self.prepare_query(query)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        // Score without holding the metadata lock (a parallel section must not hold a lock an
        // insert running on the same rayon workers could wait for), keep enough candidates to
        // survive the tombstones, then name them.
        let points = self.points();
        let tombstones = points.len().saturating_sub(self.len());
        let scored: Vec<(VectorId, f32)> = points
            .par_iter()
            .map(|point| {
                let vector_id = point.get_origin_id() as VectorId;
                (vector_id, similarity(&query, point.get_v()))
            })
            .collect();
        let mut best = keep_best_scores(scored, k + tombstones);
        let metas = self.metas.read().unwrap_or_else(PoisonError::into_inner);
        best.retain(|(vector_id, _)| metas.contains_key(vector_id));
        Ok(best
            .into_iter()
            .take(k)
            .filter_map(|(vector_id, similarity)| {
                metas.get(&vector_id).map(|meta| Neighbour {
                    vector_id,
                    meta: *meta,
                    similarity,
                })
            })
            .collect())
    }

    /// Number of live (not removed) vectors.
    pub fn len(&self) -> usize {
        self.metas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the index holds no live vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of points in the graph, removed ones included.
    pub fn graph_points(&self) -> usize {
        self.graph.get_nb_point()
    }

    /// The highest vector id inserted: every stored vector with a lower id is in the graph.
    pub fn watermark(&self) -> VectorId {
        self.watermark.load(AtomicOrdering::SeqCst)
    }

    /// The vectors' dimension, once the graph holds a point.
    pub fn dimension(&self) -> Option<usize> {
        match self.graph.get_point_indexation().get_data_dimension() {
            0 => None,
            dimension => Some(dimension),
        }
    }

    /// The construction and search parameters.
    pub fn options(&self) -> IndexOptions {
        self.options
    }

    pub(crate) fn graph(&self) -> &Graph {
        &self.graph
    }

    fn prepare_query(&self, query: &[f32]) -> Result<Vec<f32>> {
        if let Some(dimension) = self.dimension() {
            if query.len() != dimension {
                return Err(StoreError::DimensionMismatch {
                    expected: dimension,
                    got: query.len(),
                });
            }
        }
        normalise(query, 0)
    }

    /// Every point of the graph. hnsw_rs files each point under its top layer only, so walking the
    /// layers visits each once (its own all-layer iterator re-locks while holding a lock, which
    /// can deadlock against a waiting writer).
    fn points(&self) -> Vec<Arc<Point<'static, f32>>> {
        let indexation = self.graph.get_point_indexation();
        let top = usize::from(indexation.get_max_level_observed());
        let mut points = Vec::with_capacity(self.graph_points());
        for layer in 0..=top {
            if indexation.get_layer_nb_point(layer) > 0 {
                points.extend(indexation.get_layer_iterator(layer));
            }
        }
        points
    }
}

/// The graph's id of a vector. Vector ids are u64 and hnsw_rs's are usize; lib.rs refuses to build
/// on targets where the two differ.
fn data_id(id: VectorId) -> usize {
    id as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::VectorKind;
    use crate::synthetic::{Clusters, Rng};

    fn records(vectors: Vec<Vec<f32>>) -> Vec<VectorRecord> {
        vectors
            .into_iter()
            .enumerate()
            .map(|(i, vector)| VectorRecord {
                id: i as VectorId + 1,
                meta: VectorMeta {
                    city: (i % 97) as u64,
                    kind: VectorKind::Support,
                    post: Some(i as u64),
                },
                vector,
            })
            .collect()
    }

    fn build(records: &[VectorRecord]) -> AnnIndex {
        AnnIndex::build(
            records.iter().cloned().map(Ok),
            records.len(),
            IndexOptions::default(),
            &|_, _| {},
        )
        .expect("build")
    }

    #[test]
    fn dot_distance_is_clamped_and_dot_matches_naive() {
        let mut rng = Rng::new(7);
        for len in [1, 7, 8, 9, 384, 385] {
            let a: Vec<f32> = (0..len).map(|_| rng.gaussian()).collect();
            let b: Vec<f32> = (0..len).map(|_| rng.gaussian()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-3 * (1.0 + naive.abs()));
        }
        let unit = normalise(&[3.0, 4.0], 0).expect("normalise");
        assert!(DotDistance.eval(&unit, &unit) >= 0.0);
        assert_eq!(DotDistance.eval(&[1.0, 0.0], &[2.0, 0.0]), 0.0);
        assert!(matches!(
            normalise(&[0.0, 0.0], 3),
            Err(StoreError::ZeroVector { index: 3 })
        ));
        assert!(matches!(
            normalise(&[0.0, f32::NAN], 0),
            Err(StoreError::NonFiniteVector { position: 1, .. })
        ));
    }

    #[test]
    fn hnsw_recall_at_10_matches_exact_search() {
        let mut rng = Rng::new(42);
        let clusters = Clusters::new(1, 384, 60);
        let data = records(clusters.sample(&mut rng, 5000, 0.1));
        let index = build(&data);
        assert_eq!(index.len(), 5000);
        assert_eq!(index.graph_points(), 5000);
        assert_eq!(index.watermark(), 5000);
        let queries = clusters.sample(&mut rng, 200, 0.1);
        let mut hits = 0;
        for query in &queries {
            let approximate = index.search(query, 10).expect("search");
            let exact = index.exact_search(query, 10).expect("exact");
            assert_eq!(exact.len(), 10);
            assert!(exact.windows(2).all(|w| w[0].similarity >= w[1].similarity));
            assert!(approximate
                .windows(2)
                .all(|w| w[0].similarity >= w[1].similarity));
            hits += approximate
                .iter()
                .filter(|n| exact.iter().any(|e| e.vector_id == n.vector_id))
                .count();
        }
        let recall = hits as f64 / (10 * queries.len()) as f64;
        eprintln!("HNSW recall@10 on 5000 clustered 384-d vectors: {recall:.4}");
        assert!(recall >= 0.95, "recall@10 = {recall}");
        // The store-stream exact search agrees with the graph-point one.
        let query = &queries[0];
        let from_records = exact_search_records(data.iter().cloned().map(Ok), query, 10)
            .expect("exact over records");
        let from_graph = index.exact_search(query, 10).expect("exact");
        let ids = |v: &[Neighbour]| v.iter().map(|n| n.vector_id).collect::<Vec<_>>();
        assert_eq!(ids(&from_records), ids(&from_graph));
    }

    #[test]
    fn query_equal_to_an_indexed_vector_returns_it_first() {
        let mut rng = Rng::new(3);
        let data = records(Clusters::new(2, 64, 20).sample(&mut rng, 1500, 0.05));
        let index = build(&data);
        for record in data.iter().step_by(37) {
            // Unnormalised on purpose: the index normalises queries itself.
            let query: Vec<f32> = record.vector.iter().map(|x| x * 3.5).collect();
            let found = index.search(&query, 5).expect("search");
            assert_eq!(found[0].vector_id, record.id);
            assert_eq!(found[0].meta, record.meta);
            assert!(found[0].similarity > 0.999, "{}", found[0].similarity);
            assert!(found[0].similarity <= 1.0);
        }
    }

    #[test]
    fn removed_vectors_are_not_returned() {
        let mut rng = Rng::new(5);
        let data = records(Clusters::new(3, 32, 10).sample(&mut rng, 800, 0.05));
        let index = build(&data);
        let gone: Vec<VectorId> = data.iter().take(100).map(|r| r.id).collect();
        index.remove(&gone);
        assert_eq!(index.len(), 700);
        for record in data.iter().take(100).step_by(9) {
            let found = index.search(&record.vector, 10).expect("search");
            assert_eq!(found.len(), 10);
            assert!(found.iter().all(|n| n.vector_id > 100));
            let exact = index.exact_search(&record.vector, 10).expect("exact");
            assert!(exact.iter().all(|n| n.vector_id > 100));
        }
    }

    #[test]
    fn bad_queries_and_empty_index_are_handled() {
        let index = AnnIndex::new(IndexOptions::default(), 0);
        assert!(index.is_empty());
        assert_eq!(index.search(&[1.0, 2.0], 3).expect("empty search"), vec![]);
        assert_eq!(index.exact_search(&[1.0, 2.0], 3).expect("empty"), vec![]);
        let mut rng = Rng::new(9);
        let data = records(Clusters::new(4, 16, 4).sample(&mut rng, 50, 0.1));
        index.insert(&data).expect("insert");
        assert!(matches!(
            index.search(&[1.0; 15], 3),
            Err(StoreError::DimensionMismatch {
                expected: 16,
                got: 15
            })
        ));
        assert!(matches!(
            index.search(&[f32::NAN; 16], 3),
            Err(StoreError::NonFiniteVector { .. })
        ));
        assert!(matches!(
            index.search(&[0.0; 16], 3),
            Err(StoreError::ZeroVector { .. })
        ));
        assert_eq!(index.search(&data[0].vector, 0).expect("k = 0"), vec![]);
        // k above the number of vectors returns them all.
        assert_eq!(
            index.exact_search(&data[0].vector, 500).expect("all").len(),
            50
        );
        // Replaying records at or below the watermark is a no-op.
        index.insert(&data[..10]).expect("replay");
        assert_eq!(index.graph_points(), 50);
    }
}
