//! [`VectorIndex`]: the store and the graph together, the one type the engine talks to.
//!
//! Writes go to sled first and to the live graph second, so a new city is searchable as soon as
//! `insert` returns and nothing the graph holds is missing from sled. Queries read the current
//! *generation*: the live graph, or exact search over sled while a graph is rebuilt. A rebuild
//! builds a new graph beside the live generation, then swaps it in.
//!
//! Locks, always taken in this order: `rebuild_gate` (one rebuild or removal at a time), then
//! `write_gate` (inserts, dumps and swaps, so a dump's watermark matches its points and a swap's
//! catch-up sees every finished insert), then the `generation` lock (held only to read or swap
//! the `Arc`). Queries take only the generation read lock, briefly.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;

use crate::ann::{exact_search_records, normalise, AnnIndex, IndexOptions, Neighbour};
use crate::dump::{self, DumpExpectation, DumpManifest};
use crate::error::{Result, StoreError};
use crate::records::{CityId, VectorId, VectorMeta, VectorRecord};
use crate::store::Store;

/// Vectors read from sled per graph insert when catching up after a reload or a rebuild.
const CATCH_UP_CHUNK: usize = 8192;

/// How queries are being answered (serialised as `{"status": "rebuilding", "reason": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum IndexStatus {
    /// Through the HNSW graph.
    Ready,
    /// By exact search over sled while the graph is rebuilt in the background.
    Rebuilding {
        /// Why the graph had to be rebuilt (the dump was missing, corrupt, stale...).
        reason: String,
    },
    /// By exact search over sled, because the last rebuild failed; [`VectorIndex::rebuild`]
    /// retries.
    ExactOnly {
        /// Why the rebuild failed.
        reason: String,
    },
    /// Not at all: the store holds embeddings of another model; see
    /// [`VectorIndex::reset_for_model`].
    ModelMismatch {
        /// Model version recorded in the store.
        store: String,
        /// Model version the index was opened with.
        expected: String,
    },
}

/// The searchable state queries read.
enum Generation {
    Graph(Arc<AnnIndex>),
    Exact { reason: String },
    ModelMismatch { store: String },
}

#[derive(Default)]
struct RebuildState {
    running: bool,
    /// Tests hold a background rebuild back to observe the exact-search fallback.
    held: bool,
}

struct Shared {
    dir: PathBuf,
    store: Store,
    model_version: String,
    options: IndexOptions,
    generation: RwLock<Generation>,
    rebuild_gate: Mutex<()>,
    write_gate: Mutex<()>,
    rebuild: Mutex<RebuildState>,
    rebuild_changed: Condvar,
    closing: AtomicBool,
}

/// The persistent vector index of one directory: sled records plus the HNSW graph over them.
///
/// Share it behind an `Arc`; every method takes `&self`. Dropping it cancels a background rebuild
/// and waits for its thread, so the directory can be reopened right after.
pub struct VectorIndex {
    shared: Arc<Shared>,
    rebuild_thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("dir", &self.shared.dir)
            .field("model_version", &self.shared.model_version)
            .field("status", &self.status())
            .finish()
    }
}

impl VectorIndex {
    /// Opens (or creates) the index in `dir` for embeddings of `model_version`.
    ///
    /// Loads the graph dump and inserts the vectors added since it was written. When the dump is
    /// missing or unusable, `open` still succeeds: queries use exact search while a background
    /// thread rebuilds the graph ([`VectorIndex::status`], [`VectorIndex::wait_ready`]). When the
    /// store holds another model's embeddings, `open` succeeds but queries and inserts fail with
    /// [`StoreError::ModelMismatch`] until [`VectorIndex::reset_for_model`].
    pub fn open(
        dir: impl AsRef<Path>,
        model_version: &str,
        options: IndexOptions,
    ) -> Result<VectorIndex> {
        Self::open_inner(dir.as_ref(), model_version, options, false, |_| ())
            .map(|(index, ())| index)
    }

    /// [`VectorIndex::open`], running `alongside` on the record store on this thread while another loads
    /// the graph: loading the graph dump is most of the time opening takes (about half a second for 34k
    /// vectors on 2 cores), and a caller's own reads of the store (its city table) need not wait for it.
    pub fn open_alongside<R>(
        dir: impl AsRef<Path>,
        model_version: &str,
        options: IndexOptions,
        alongside: impl FnOnce(&Store) -> R,
    ) -> Result<(VectorIndex, R)> {
        Self::open_inner(dir.as_ref(), model_version, options, false, alongside)
    }

    fn open_inner<R>(
        dir: &Path,
        model_version: &str,
        options: IndexOptions,
        hold_rebuild: bool,
        alongside: impl FnOnce(&Store) -> R,
    ) -> Result<(VectorIndex, R)> {
        let store = Store::open(dir)?;
        dump::recover_interrupted_dump(dir)?;
        let (generation, beside) = std::thread::scope(|scope| {
            let generation =
                scope.spawn(|| Self::load_generation(dir, &store, model_version, options));
            let beside = alongside(&store);
            let generation = generation
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (generation, beside)
        });
        let generation = generation?;
        let needs_rebuild = matches!(generation, Generation::Exact { .. });
        let index = VectorIndex {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                store,
                model_version: model_version.to_string(),
                options,
                generation: RwLock::new(generation),
                rebuild_gate: Mutex::new(()),
                write_gate: Mutex::new(()),
                rebuild: Mutex::new(RebuildState {
                    running: false,
                    held: hold_rebuild,
                }),
                rebuild_changed: Condvar::new(),
                closing: AtomicBool::new(false),
            }),
            rebuild_thread: Mutex::new(None),
        };
        if needs_rebuild {
            index.spawn_background_rebuild()?;
        }
        Ok((index, beside))
    }

    /// What the store's vectors can be searched with: the graph dump caught up with the store, exact search
    /// while an unusable dump is rebuilt, or nothing for another model's embeddings.
    fn load_generation(
        dir: &Path,
        store: &Store,
        model_version: &str,
        options: IndexOptions,
    ) -> Result<Generation> {
        Ok(match store.model_version()? {
            Some(stored) if stored != model_version => {
                tracing::warn!(
                    store = %stored,
                    expected = %model_version,
                    "the index holds another model's embeddings; rebuild it with `contrastgeo index build`"
                );
                Generation::ModelMismatch { store: stored }
            }
            stored => {
                if stored.is_none() {
                    store.set_model_version(model_version)?;
                }
                match load_graph(dir, store, model_version, options) {
                    Ok(index) => Generation::Graph(Arc::new(index)),
                    Err(StoreError::UnusableDump { path, reason }) => {
                        tracing::warn!(
                            path = %path.display(),
                            %reason,
                            "graph dump unusable; answering with exact search while the graph is rebuilt"
                        );
                        Generation::Exact { reason }
                    }
                    Err(error) => return Err(error),
                }
            }
        })
    }

    /// The record store (cities, support posts, vectors). Write vectors through
    /// [`VectorIndex::insert`], not the store, so that the live graph sees them.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The model version the index was opened with.
    pub fn model_version(&self) -> &str {
        &self.shared.model_version
    }

    /// The HNSW parameters.
    pub fn options(&self) -> IndexOptions {
        self.shared.options
    }

    /// How queries are answered right now.
    pub fn status(&self) -> IndexStatus {
        let running = lock(&self.shared.rebuild).running;
        match &*read(&self.shared.generation) {
            Generation::Graph(_) => IndexStatus::Ready,
            Generation::Exact { reason } if running => IndexStatus::Rebuilding {
                reason: reason.clone(),
            },
            Generation::Exact { reason } => IndexStatus::ExactOnly {
                reason: reason.clone(),
            },
            Generation::ModelMismatch { store } => IndexStatus::ModelMismatch {
                store: store.clone(),
                expected: self.shared.model_version.clone(),
            },
        }
    }

    /// Blocks until no background rebuild runs, then returns `Ok` if queries go through the graph,
    /// or the reason they do not.
    pub fn wait_ready(&self) -> Result<()> {
        {
            let mut state = lock(&self.shared.rebuild);
            while state.running {
                state = self
                    .shared
                    .rebuild_changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        match self.status() {
            IndexStatus::Ready => Ok(()),
            IndexStatus::Rebuilding { reason } | IndexStatus::ExactOnly { reason } => {
                Err(StoreError::BuildFailed { reason })
            }
            IndexStatus::ModelMismatch { store, expected } => {
                Err(StoreError::ModelMismatch { store, expected })
            }
        }
    }

    /// Stores vectors (L2-normalised) in sled, flushes, and adds them to the live graph: they are
    /// durable and searchable when this returns. Returns their ids, increasing in input order.
    pub fn insert(&self, vectors: &[(VectorMeta, Vec<f32>)]) -> Result<Vec<VectorId>> {
        self.check_model()?;
        let unit = vectors
            .iter()
            .enumerate()
            .map(|(index, (meta, vector))| Ok((*meta, normalise(vector, index)?)))
            .collect::<Result<Vec<_>>>()?;
        let _writes = lock(&self.shared.write_gate);
        let ids = self.shared.store.add_vectors(&unit)?;
        self.shared.store.flush()?;
        if let Some(index) = self.live_graph() {
            let records: Vec<VectorRecord> = ids
                .iter()
                .zip(unit)
                .map(|(&id, (meta, vector))| VectorRecord { id, meta, vector })
                .collect();
            index.insert(&records)?;
        }
        Ok(ids)
    }

    /// Removes a city's vectors from sled and from search results. Waits for a running rebuild.
    pub fn remove_vectors_of_city(&self, city: CityId) -> Result<Vec<VectorId>> {
        let _rebuild = lock(&self.shared.rebuild_gate);
        let _writes = lock(&self.shared.write_gate);
        let removed = self.shared.store.remove_vectors_of_city(city)?;
        self.shared.store.flush()?;
        if let Some(index) = self.live_graph() {
            index.remove(&removed);
        }
        Ok(removed)
    }

    /// The `k` stored vectors most similar to `query` (cosine), best first: through the graph when
    /// it is ready, by exact search over sled otherwise.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbour>> {
        self.check_query(query)?;
        let index = match &*read(&self.shared.generation) {
            Generation::Graph(index) => Some(Arc::clone(index)),
            Generation::Exact { .. } => None,
            Generation::ModelMismatch { store } => return Err(self.mismatch(store)),
        };
        match index {
            Some(index) => index.search(query, k),
            None => exact_search_records(self.shared.store.vectors_after(0), query, k),
        }
    }

    /// The exact `k` nearest stored vectors, by brute force over sled (slow; for checks).
    pub fn exact_search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbour>> {
        self.check_model()?;
        self.check_query(query)?;
        exact_search_records(self.shared.store.vectors_after(0), query, k)
    }

    /// Number of stored vectors (a scan of sled).
    pub fn len(&self) -> usize {
        self.shared.store.vector_count()
    }

    /// Whether no vector is stored.
    pub fn is_empty(&self) -> bool {
        self.shared.store.max_vector_id().ok().flatten().is_none()
    }

    /// Writes the live graph to `dir/graph/` (atomically replacing the previous dump) so that the
    /// next `open` loads it instead of rebuilding. Returns the manifest, or `None` for an empty
    /// graph. Inserts wait while it runs.
    pub fn dump(&self) -> Result<Option<DumpManifest>> {
        let _writes = lock(&self.shared.write_gate);
        dump_generation(&self.shared)
    }

    /// Rebuilds the graph from sled beside the live one, swaps it in and dumps it; queries keep
    /// being answered meanwhile. `progress(done, total)` follows the build. Also drops the
    /// tombstones of removed vectors.
    pub fn rebuild(&self, progress: &dyn Fn(usize, usize)) -> Result<()> {
        self.check_model()?;
        rebuild_graph(&self.shared, progress)
    }

    /// Clears the vectors and the graph and records this index's model version, keeping cities and
    /// support posts: the first step of rebuilding the index for a new model, after which the
    /// caller re-embeds and inserts. Waits for a running rebuild.
    pub fn reset_for_model(&self) -> Result<()> {
        let _rebuild = lock(&self.shared.rebuild_gate);
        let _writes = lock(&self.shared.write_gate);
        let store = &self.shared.store;
        store.clear_vectors()?;
        store.set_model_version(&self.shared.model_version)?;
        store.flush()?;
        dump::remove_dump(&self.shared.dir)?;
        *write(&self.shared.generation) =
            Generation::Graph(Arc::new(AnnIndex::new(self.shared.options, 0)));
        tracing::info!(model_version = %self.shared.model_version, "cleared the index for a new model");
        Ok(())
    }

    /// The live graph, if queries go through one.
    fn live_graph(&self) -> Option<Arc<AnnIndex>> {
        match &*read(&self.shared.generation) {
            Generation::Graph(index) => Some(Arc::clone(index)),
            _ => None,
        }
    }

    fn check_model(&self) -> Result<()> {
        match &*read(&self.shared.generation) {
            Generation::ModelMismatch { store } => Err(self.mismatch(store)),
            _ => Ok(()),
        }
    }

    fn check_query(&self, query: &[f32]) -> Result<()> {
        if let Some(dimension) = self.shared.store.dimension()? {
            if query.len() != dimension {
                return Err(StoreError::DimensionMismatch {
                    expected: dimension,
                    got: query.len(),
                });
            }
        }
        Ok(())
    }

    fn mismatch(&self, store: &str) -> StoreError {
        StoreError::ModelMismatch {
            store: store.to_string(),
            expected: self.shared.model_version.clone(),
        }
    }

    fn spawn_background_rebuild(&self) -> Result<()> {
        lock(&self.shared.rebuild).running = true;
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("contrastgeo-index-rebuild".into())
            .spawn(move || background_rebuild(&shared));
        match spawned {
            Ok(handle) => {
                *lock(&self.rebuild_thread) = Some(handle);
                Ok(())
            }
            Err(error) => {
                lock(&self.shared.rebuild).running = false;
                Err(StoreError::BuildFailed {
                    reason: format!("cannot start the rebuild thread: {error}"),
                })
            }
        }
    }

    /// Lets a rebuild held back by `open_inner(.., hold_rebuild: true)` start.
    #[cfg(test)]
    fn release_rebuild(&self) {
        lock(&self.shared.rebuild).held = false;
        self.shared.rebuild_changed.notify_all();
    }
}

impl Drop for VectorIndex {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        {
            lock(&self.shared.rebuild).held = false;
            self.shared.rebuild_changed.notify_all();
        }
        if let Some(handle) = lock(&self.rebuild_thread).take() {
            if handle.join().is_err() {
                tracing::error!("the graph rebuild thread panicked");
            }
        }
    }
}

/// Loads the dump of `dir` and inserts the vectors stored since; an empty store gets an empty graph.
fn load_graph(
    dir: &Path,
    store: &Store,
    model_version: &str,
    options: IndexOptions,
) -> Result<AnnIndex> {
    let Some(dimension) = store.dimension()? else {
        dump::remove_dump(dir)?;
        return Ok(AnnIndex::new(options, 0));
    };
    if store.max_vector_id()?.is_none() {
        return Ok(AnnIndex::new(options, 0));
    }
    let expected = DumpExpectation {
        model_version,
        dimension,
        next_vector_id: store.next_vector_id()?,
        options,
    };
    let (graph, manifest) = dump::load_graph(dir, &expected)?;
    let mut metas = HashMap::with_capacity(manifest.graph_points);
    for entry in store.vector_metas() {
        let (id, meta) = entry?;
        if id > manifest.watermark {
            break;
        }
        metas.insert(id, meta);
    }
    let index = AnnIndex::from_parts(graph, metas, manifest.watermark, options);
    let caught_up = catch_up(store, &index)?;
    tracing::info!(
        watermark = manifest.watermark,
        graph_points = manifest.graph_points,
        caught_up,
        "loaded the HNSW graph dump"
    );
    Ok(index)
}

/// Inserts into `index` the stored vectors above its watermark; returns how many.
fn catch_up(store: &Store, index: &AnnIndex) -> Result<usize> {
    let mut records = store.vectors_after(index.watermark());
    let mut inserted = 0;
    loop {
        let chunk = records
            .by_ref()
            .take(CATCH_UP_CHUNK)
            .collect::<Result<Vec<_>>>()?;
        if chunk.is_empty() {
            return Ok(inserted);
        }
        index.insert(&chunk)?;
        inserted += chunk.len();
    }
}

fn dump_generation(shared: &Shared) -> Result<Option<DumpManifest>> {
    let index = match &*read(&shared.generation) {
        Generation::Graph(index) => Arc::clone(index),
        Generation::Exact { reason } => {
            return Err(StoreError::GraphNotReady {
                reason: reason.clone(),
            })
        }
        Generation::ModelMismatch { store } => {
            return Err(StoreError::ModelMismatch {
                store: store.clone(),
                expected: shared.model_version.clone(),
            })
        }
    };
    // The dump must never be ahead of the durable records.
    shared.store.flush()?;
    let manifest = dump::write_dump(&shared.dir, &index, &shared.model_version)?;
    if let Some(manifest) = &manifest {
        shared.store.set_dump_watermark(manifest.watermark)?;
    }
    Ok(manifest)
}

/// Builds a new graph from sled beside the live generation, swaps it in, and dumps it.
fn rebuild_graph(shared: &Shared, progress: &dyn Fn(usize, usize)) -> Result<()> {
    let _rebuild = lock(&shared.rebuild_gate);
    let store = &shared.store;
    // Every id up to the current maximum is committed (ids are handed out in commit order), so the
    // build sees all of them; later ones are caught up under the write gate below.
    let up_to = store.max_vector_id()?.unwrap_or(0);
    let total = store.vector_count();
    tracing::info!(vectors = total, "building the HNSW graph");
    let index = AnnIndex::build_cancellable(
        store.vectors_between(0, up_to),
        total,
        shared.options,
        progress,
        &shared.closing,
    )?;
    let _writes = lock(&shared.write_gate);
    catch_up(store, &index)?;
    *write(&shared.generation) = Generation::Graph(Arc::new(index));
    tracing::info!("swapped in the rebuilt HNSW graph");
    dump_generation(shared)?;
    Ok(())
}

fn background_rebuild(shared: &Shared) {
    {
        let mut state = lock(&shared.rebuild);
        while state.held {
            state = shared
                .rebuild_changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        rebuild_graph(shared, &|done, total| {
            tracing::debug!(done, total, "rebuilding the HNSW graph");
        })
    }));
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(StoreError::Cancelled)) => Some("the rebuild was cancelled".to_string()),
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some("the rebuild panicked".to_string()),
    };
    if let Some(reason) = failure {
        tracing::warn!(%reason, "background rebuild of the HNSW graph did not finish");
        let mut generation = write(&shared.generation);
        // A failed dump after a successful swap leaves a live graph: keep it.
        if let Generation::Exact { .. } = &*generation {
            *generation = Generation::Exact { reason };
        }
    }
    lock(&shared.rebuild).running = false;
    shared.rebuild_changed.notify_all();
}

/// Locks a mutex, ignoring poisoning: the data behind our locks stays consistent across a panic
/// (the gates guard `()`, the rebuild state is two flags).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;
    use crate::records::VectorKind;
    use crate::synthetic::{Clusters, Rng};

    const MODEL: &str = "contrastgeo-test-1";

    fn batch(
        clusters: &Clusters,
        rng: &mut Rng,
        n: usize,
        city: CityId,
    ) -> Vec<(VectorMeta, Vec<f32>)> {
        clusters
            .sample(rng, n, 0.05)
            .into_iter()
            .map(|vector| {
                (
                    VectorMeta {
                        city,
                        kind: VectorKind::Support,
                        post: None,
                    },
                    vector,
                )
            })
            .collect()
    }

    fn ids(found: &[Neighbour]) -> Vec<VectorId> {
        found.iter().map(|n| n.vector_id).collect()
    }

    /// An index with `n` vectors of dimension `dim`, dumped, then closed.
    fn dumped_index(dir: &Path, n: usize, dim: usize) -> Vec<(VectorMeta, Vec<f32>)> {
        let clusters = Clusters::new(11, dim, 12);
        let mut rng = Rng::new(1);
        let vectors: Vec<_> = (0..n / 100)
            .flat_map(|city| batch(&clusters, &mut rng, 100, city as CityId))
            .collect();
        let index = VectorIndex::open(dir, MODEL, IndexOptions::default()).expect("open");
        assert_eq!(index.status(), IndexStatus::Ready);
        index.insert(&vectors).expect("insert");
        let manifest = index.dump().expect("dump").expect("non-empty");
        assert_eq!(manifest.watermark, n as VectorId);
        assert_eq!(manifest.graph_points, n);
        vectors
    }

    #[test]
    fn inserted_vectors_are_searchable_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = VectorIndex::open(dir.path(), MODEL, IndexOptions::default()).expect("open");
        assert!(index.is_empty());
        assert_eq!(index.search(&[1.0; 8], 5).expect("empty"), vec![]);
        assert_eq!(index.dump().expect("empty dump"), None);
        let clusters = Clusters::new(5, 48, 8);
        let mut rng = Rng::new(2);
        index
            .insert(&batch(&clusters, &mut rng, 400, 1))
            .expect("insert");
        let new_city = batch(&clusters, &mut rng, 3, 777);
        let new_ids = index.insert(&new_city).expect("insert city");
        for ((_, vector), id) in new_city.iter().zip(&new_ids) {
            let found = index.search(vector, 3).expect("search");
            assert_eq!(found[0].vector_id, *id);
            assert_eq!(found[0].meta.city, 777);
        }
        let err = index.search(&[1.0; 47], 3).expect_err("wrong dimension");
        assert!(matches!(
            err,
            StoreError::DimensionMismatch {
                expected: 48,
                got: 47
            }
        ));
        let err = index
            .insert(&[(new_city[0].0, vec![f32::NAN; 48])])
            .expect_err("NaN");
        assert!(matches!(err, StoreError::NonFiniteVector { .. }));
        assert_eq!(index.len(), 403);

        let removed = index.remove_vectors_of_city(777).expect("remove");
        assert_eq!(removed, new_ids);
        for (_, vector) in &new_city {
            let found = index.search(vector, 5).expect("search");
            assert!(found.iter().all(|n| n.meta.city != 777));
        }
    }

    #[test]
    fn dump_then_reload_gives_the_same_results() {
        let dir = tempfile::tempdir().expect("tempdir");
        dumped_index(dir.path(), 2000, 64);
        let clusters = Clusters::new(11, 64, 12);
        let queries = clusters.sample(&mut Rng::new(99), 25, 0.05);
        let before: Vec<Vec<Neighbour>> = {
            let index =
                VectorIndex::open(dir.path(), MODEL, IndexOptions::default()).expect("open");
            queries
                .iter()
                .map(|q| index.search(q, 10).expect("search"))
                .collect()
        };
        let index = VectorIndex::open(dir.path(), MODEL, IndexOptions::default()).expect("reopen");
        assert_eq!(
            index.status(),
            IndexStatus::Ready,
            "a valid dump needs no rebuild"
        );
        for (query, expected) in queries.iter().zip(&before) {
            let found = index.search(query, 10).expect("search");
            assert_eq!(ids(&found), ids(expected));
            for (a, b) in found.iter().zip(expected) {
                assert!((a.similarity - b.similarity).abs() < 1e-6);
                assert_eq!(a.meta, b.meta);
            }
        }
    }

    #[test]
    fn vectors_added_after_a_dump_are_found_after_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        dumped_index(dir.path(), 1000, 32);
        let clusters = Clusters::new(12, 32, 5);
        let late = batch(&clusters, &mut Rng::new(4), 50, 4242);
        let late_ids = {
            let index =
                VectorIndex::open(dir.path(), MODEL, IndexOptions::default()).expect("open");
            index.insert(&late).expect("insert after dump")
        };
        assert!(late_ids.iter().all(|&id| id > 1000));
        let index = VectorIndex::open(dir.path(), MODEL, IndexOptions::default()).expect("reopen");
        assert_eq!(index.status(), IndexStatus::Ready);
        assert_eq!(
            index.store().dump_watermark().expect("watermark"),
            Some(1000)
        );
        for ((_, vector), id) in late.iter().zip(&late_ids) {
            let found = index.search(vector, 1).expect("search");
            assert_eq!(found[0].vector_id, *id);
            assert_eq!(found[0].meta.city, 4242);
        }
        // A reloaded graph dumps again, and the new dump covers the late vectors.
        let manifest = index.dump().expect("dump").expect("non-empty");
        assert_eq!(manifest.watermark, late_ids[late_ids.len() - 1]);
        assert_eq!(manifest.graph_points, 1050);
        drop(index);
        let index = VectorIndex::open(dir.path(), MODEL, IndexOptions::default()).expect("reopen");
        assert_eq!(index.status(), IndexStatus::Ready);
        let found = index.search(&late[3].1, 1).expect("search");
        assert_eq!(found[0].vector_id, late_ids[3]);
    }

    #[test]
    fn unusable_dumps_fall_back_to_exact_search_and_rebuild() {
        type Damage = fn(&Path);
        let damages: [(&str, Damage, &str); 5] = [
            (
                "flipped byte",
                |graph| {
                    let path = graph.join("contrastgeo.hnsw.data");
                    let mut bytes = std::fs::read(&path).expect("read");
                    let middle = bytes.len() / 2;
                    bytes[middle] ^= 0x5a;
                    std::fs::write(&path, bytes).expect("write");
                },
                "checksum mismatch",
            ),
            (
                "truncated graph",
                |graph| {
                    let path = graph.join("contrastgeo.hnsw.graph");
                    let bytes = std::fs::read(&path).expect("read");
                    std::fs::write(&path, &bytes[..bytes.len() / 3]).expect("write");
                },
                "checksum mismatch",
            ),
            (
                "format version",
                |graph| edit_manifest(graph, |m| m.format_version = 99),
                "format version 99",
            ),
            (
                "model version",
                |graph| edit_manifest(graph, |m| m.model_version = "older-model".into()),
                "older-model",
            ),
            (
                "missing dump",
                |graph| std::fs::remove_dir_all(graph).expect("remove"),
                "no dump",
            ),
        ];
        for (name, damage, expected_reason) in damages {
            let dir = tempfile::tempdir().expect("tempdir");
            let vectors = dumped_index(dir.path(), 600, 24);
            damage(&dump::graph_dir(dir.path()));

            let (index, ()) =
                VectorIndex::open_inner(dir.path(), MODEL, IndexOptions::default(), true, |_| ())
                    .expect("open succeeds despite the dump");
            match index.status() {
                IndexStatus::Rebuilding { reason } => {
                    assert!(reason.contains(expected_reason), "{name}: {reason}")
                }
                other => panic!("{name}: expected a rebuild, got {other:?}"),
            }
            // Exact search answers meanwhile, and so do inserts.
            for (i, (_, vector)) in vectors.iter().enumerate().step_by(97) {
                let found = index.search(vector, 3).expect("exact fallback");
                assert_eq!(found[0].vector_id, i as VectorId + 1, "{name}");
            }
            let extra = batch(&Clusters::new(8, 24, 3), &mut Rng::new(8), 5, 9);
            let extra_ids = index.insert(&extra).expect("insert while rebuilding");
            assert!(matches!(
                index.dump(),
                Err(StoreError::GraphNotReady { .. })
            ));

            index.release_rebuild();
            index.wait_ready().expect("rebuild succeeds");
            assert_eq!(index.status(), IndexStatus::Ready);
            for ((_, vector), id) in extra.iter().zip(&extra_ids) {
                assert_eq!(index.search(vector, 1).expect("search")[0].vector_id, *id);
            }
            drop(index);
            // The rebuild wrote a good dump: the next open needs no rebuild.
            let index =
                VectorIndex::open(dir.path(), MODEL, IndexOptions::default()).expect("reopen");
            assert_eq!(index.status(), IndexStatus::Ready, "{name}");
            assert_eq!(
                index.search(&extra[0].1, 1).expect("search")[0].vector_id,
                extra_ids[0]
            );
        }
    }

    fn edit_manifest(graph: &Path, edit: fn(&mut DumpManifest)) {
        let path = graph.join("manifest.json");
        let mut manifest: DumpManifest =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("parse");
        edit(&mut manifest);
        std::fs::write(&path, serde_json::to_vec(&manifest).expect("json")).expect("write");
    }

    #[test]
    fn model_version_mismatch_refuses_queries_and_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vectors = dumped_index(dir.path(), 300, 16);
        let index = VectorIndex::open(dir.path(), "contrastgeo-test-2", IndexOptions::default())
            .expect("open succeeds so that the index can be rebuilt");
        assert_eq!(
            index.status(),
            IndexStatus::ModelMismatch {
                store: MODEL.into(),
                expected: "contrastgeo-test-2".into()
            }
        );
        let err = index.search(&vectors[0].1, 5).expect_err("refused");
        let message = err.to_string();
        assert!(matches!(err, StoreError::ModelMismatch { .. }));
        assert!(message.contains(MODEL), "{message}");
        assert!(message.contains("contrastgeo-test-2"), "{message}");
        assert!(message.contains("contrastgeo index build"), "{message}");
        assert!(matches!(
            index.insert(&vectors[..1]),
            Err(StoreError::ModelMismatch { .. })
        ));
        assert!(matches!(
            index.wait_ready(),
            Err(StoreError::ModelMismatch { .. })
        ));

        // Rebuilding for the new model: clear, then insert the new embeddings (another dimension).
        index.reset_for_model().expect("reset");
        assert_eq!(index.status(), IndexStatus::Ready);
        assert_eq!(index.len(), 0);
        let new = batch(&Clusters::new(3, 20, 4), &mut Rng::new(3), 50, 1);
        let new_ids = index.insert(&new).expect("insert new model's vectors");
        assert!(new_ids[0] > 300, "ids are never reused");
        assert_eq!(
            index.search(&new[7].1, 1).expect("search")[0].vector_id,
            new_ids[7]
        );
        index.dump().expect("dump");
        drop(index);
        let index = VectorIndex::open(dir.path(), "contrastgeo-test-2", IndexOptions::default())
            .expect("reopen");
        assert_eq!(index.status(), IndexStatus::Ready);
    }

    #[test]
    fn rebuild_drops_tombstones_and_keeps_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vectors = dumped_index(dir.path(), 500, 16);
        {
            let index =
                VectorIndex::open(dir.path(), MODEL, IndexOptions::default()).expect("open");
            assert_eq!(index.remove_vectors_of_city(0).expect("remove").len(), 100);
        }
        // The dump still holds city 0; reloaded, its points are tombstones.
        let index = VectorIndex::open(dir.path(), MODEL, IndexOptions::default()).expect("reopen");
        assert_eq!(index.status(), IndexStatus::Ready);
        for (_, vector) in vectors.iter().take(100).step_by(13) {
            let found = index.search(vector, 10).expect("search");
            assert_eq!(found.len(), 10);
            assert!(found.iter().all(|n| n.meta.city != 0));
        }
        let reports = std::sync::Mutex::new(Vec::new());
        index
            .rebuild(&|done, total| reports.lock().expect("lock").push((done, total)))
            .expect("rebuild");
        let reports = reports.into_inner().expect("reports");
        assert_eq!(reports.first(), Some(&(0, 400)));
        assert_eq!(reports.last(), Some(&(400, 400)));
        let (_, vector) = &vectors[450];
        let found = index.search(vector, 10).expect("search");
        assert_eq!(found[0].vector_id, 451);
        assert!(found.iter().all(|n| n.meta.city != 0));
    }

    const CRASH_CHILD_DIR: &str = "CONTRASTGEO_INDEX_CRASH_CHILD_DIR";

    /// The writer the crash test kills: only does something when started by that test.
    #[test]
    fn crash_child_writer() {
        let Ok(dir) = std::env::var(CRASH_CHILD_DIR) else {
            return;
        };
        let index = VectorIndex::open(&dir, MODEL, IndexOptions::default()).expect("open");
        let clusters = Clusters::new(21, 32, 16);
        let mut rng = Rng::new(21);
        let mut acknowledged = 0;
        for round in 0u64.. {
            let vectors = batch(&clusters, &mut rng, 250, round % 40);
            acknowledged += index.insert(&vectors).expect("insert").len();
            // `insert` returned: these vectors are durable.
            println!("acknowledged {acknowledged}");
            if round % 4 == 3 {
                index.dump().expect("dump");
            }
        }
    }

    #[test]
    fn killed_writer_leaves_a_consistent_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "vector_index::tests::crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the writer");
        let stdout = child.stdout.take().expect("stdout");
        let mut acknowledged = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            if let Some(count) = line.strip_prefix("acknowledged ") {
                acknowledged = count.parse().expect("count");
                if acknowledged >= 4000 {
                    break;
                }
            }
        }
        assert!(acknowledged >= 4000, "the writer stopped early");
        // Let it get into its next insert or dump, then SIGKILL it.
        std::thread::sleep(std::time::Duration::from_millis(7));
        child.kill().expect("kill");
        child.wait().expect("reap");

        let index = VectorIndex::open(dir.path(), MODEL, IndexOptions::default())
            .expect("the store opens after a kill");
        index.wait_ready().expect("graph ready");
        let store = index.store();
        let listed: Vec<VectorRecord> = store
            .vectors_after(0)
            .collect::<Result<_>>()
            .expect("every listed vector decodes");
        assert_eq!(listed.len(), store.vector_count());
        assert!(
            listed.len() >= acknowledged,
            "{} vectors survived, {acknowledged} were acknowledged",
            listed.len()
        );
        assert!(listed.windows(2).all(|w| w[0].id < w[1].id));
        for record in listed.iter().step_by(211) {
            assert_eq!(
                store.vector(record.id).expect("read").as_ref(),
                Some(record)
            );
        }
        for record in listed.iter().step_by(509) {
            let found = index.search(&record.vector, 1).expect("search");
            assert_eq!(found[0].vector_id, record.id);
        }
        let last = listed.last().expect("some vectors").id;
        let more = batch(&Clusters::new(21, 32, 16), &mut Rng::new(77), 10, 1);
        let new_ids = index.insert(&more).expect("insert after the crash");
        assert!(new_ids[0] > last, "ids are not reused after a crash");
    }
}
