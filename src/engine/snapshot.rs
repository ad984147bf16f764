//! One generation of what queries read: the model, the vector index it filled, and an in-memory cache of the
//! index's cities with their prompt and support vectors.
//!
//! A snapshot is immutable once opened. The engine holds it behind an `Arc` and swaps in a new one on reload;
//! queries that started on the old generation finish on it.
//!
//! The cache holds every stored vector grouped by city (the same memory as the graph's own copy: about 52 MB
//! for the 34k prompts of the whole gazetteer). It lets the engine score a candidate city exactly, against
//! all of its vectors, whichever of them HNSW happened to return: the graph only proposes candidates.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use contrastgeo_index::{IndexStatus, LexicalIndex, PostId, Store, VectorIndex, VectorKind};

use super::error::{EngineError, Result};
use super::label_head::{HeadConfig, LabelHead, LabelledExample};
use super::EngineConfig;
use crate::geo::mentions::PlaceNames;
use crate::geo::{City, CityId};
use crate::model::GeoModel;
use serde::{Deserialize, Serialize};

/// The sled database inside a store directory (see `contrastgeo_index::Store::open`).
const RECORDS_DIR: &str = "records.sled";

/// A support post's stored vector.
#[derive(Debug, Clone)]
pub struct SupportVector {
    /// The support post's id in the store.
    pub post: PostId,
    /// Its unit embedding.
    pub vector: Vec<f32>,
}

/// A stored city with its vectors.
#[derive(Debug, Clone)]
pub struct CityEntry {
    /// The city record.
    pub city: City,
    /// Unit embedding of its location prompt, when one is stored.
    pub prompt: Option<Vec<f32>>,
    /// Unit embeddings of its support posts.
    pub supports: Vec<SupportVector>,
}

/// Every stored city with its vectors, by id.
///
/// Entries are shared (`Arc`), so a copy with a few cities added or changed ([`CityCache::with_additions`])
/// costs one map of pointers, not a copy of every vector: that is how live ingest publishes new cities
/// without blocking queries.
#[derive(Debug, Clone, Default)]
pub struct CityCache {
    entries: HashMap<CityId, Arc<CityEntry>>,
    /// `(lowercase name, population, id)` sorted by name, then larger population first, then id; built on the
    /// first name search.
    names: OnceLock<Vec<(String, u64, CityId)>>,
    /// The city each neighbourhood-like gazetteer entry collapses into (see [`CityCache::collapses_into`]),
    /// per collapse radius in metres; built on first use.
    parents: OnceLock<(u32, HashMap<CityId, CityId>)>,
    /// The names of the cities that the gazetteer's names lack, for place mentions; built on first use.
    own_names: OnceLock<PlaceNames>,
    /// City ids by [`GRID_DEGREES`] cell of (latitude, longitude), for finding cities near a point; built on
    /// first use.
    grid: OnceLock<HashMap<(i64, i64), Vec<CityId>>>,
    /// The median population of the cities that have one (0 when none has); computed on first use.
    median_population: OnceLock<u64>,
}

/// Cell size of the city grid ([`CityCache::nearest_within`], neighbourhood collapse), in degrees.
const GRID_DEGREES: f64 = 0.25;

/// Kilometres per degree of latitude.
const KM_PER_DEGREE: f64 = 111.0;

fn grid_cell(lat: f64, lon: f64) -> (i64, i64) {
    (
        (lat / GRID_DEGREES).floor() as i64,
        (lon / GRID_DEGREES).floor() as i64,
    )
}

impl CityCache {
    /// Reads the cities and vectors of `store`. Vectors of a city with no city record are skipped (counted
    /// in a warning): they can be found by HNSW but never answered.
    pub fn load(store: &Store) -> Result<Self> {
        let mut entries: HashMap<CityId, CityEntry> = store
            .cities()?
            .into_iter()
            .map(|city| {
                let entry = CityEntry {
                    city: city.clone(),
                    prompt: None,
                    supports: Vec::new(),
                };
                (city.id, entry)
            })
            .collect();
        let mut orphans = 0usize;
        for record in store.vectors_after(0) {
            let record = record?;
            let Some(entry) = entries.get_mut(&record.meta.city) else {
                orphans += 1;
                continue;
            };
            match (record.meta.kind, record.meta.post) {
                (VectorKind::Prompt, _) => entry.prompt = Some(record.vector),
                (VectorKind::Support, Some(post)) => entry.supports.push(SupportVector {
                    post,
                    vector: record.vector,
                }),
                (VectorKind::Support, None) => orphans += 1,
            }
        }
        if orphans > 0 {
            tracing::warn!(
                orphans,
                "vectors without a stored city (or support post) are ignored"
            );
        }
        Ok(Self {
            entries: entries
                .into_iter()
                .map(|(id, e)| (id, Arc::new(e)))
                .collect(),
            names: OnceLock::new(),
            parents: OnceLock::new(),
            own_names: OnceLock::new(),
            grid: OnceLock::new(),
            median_population: OnceLock::new(),
        })
    }

    /// A copy of this cache with `cities` added (or their records replaced) and `prompts` and `supports`
    /// vectors attached to their cities. A vector of a city neither here nor in `cities` is dropped.
    pub fn with_additions(
        &self,
        cities: &[City],
        prompts: Vec<(CityId, Vec<f32>)>,
        supports: Vec<(CityId, SupportVector)>,
    ) -> Self {
        let mut entries = self.entries.clone();
        for city in cities {
            let entry = entries.entry(city.id).or_insert_with(|| {
                Arc::new(CityEntry {
                    city: city.clone(),
                    prompt: None,
                    supports: Vec::new(),
                })
            });
            Arc::make_mut(entry).city = city.clone();
        }
        for (city, vector) in prompts {
            if let Some(entry) = entries.get_mut(&city) {
                Arc::make_mut(entry).prompt = Some(vector);
            }
        }
        for (city, support) in supports {
            if let Some(entry) = entries.get_mut(&city) {
                Arc::make_mut(entry).supports.push(support);
            }
        }
        Self {
            entries,
            names: OnceLock::new(),
            parents: OnceLock::new(),
            own_names: OnceLock::new(),
            grid: OnceLock::new(),
            median_population: OnceLock::new(),
        }
    }

    /// The city `id` is answered as: a gazetteer entry without support posts that lies within `radius_km`
    /// of a city at least [`COLLAPSE_POPULATION_RATIO`] times as populous is a neighbourhood or suburb of it
    /// (GeoNames lists "Chicago Loop" and "Logan Square" beside Chicago), and is answered as that city (the
    /// most populous one in reach). A city with support posts, or one an analyst created (ids from
    /// [`crate::data::ingest::ANALYST_CITY_IDS`]), was added on purpose and never collapses.
    /// `None` when `id` stands for itself.
    pub fn collapses_into(&self, id: CityId, radius_km: f32) -> Option<CityId> {
        if radius_km <= 0.0 {
            return None;
        }
        let metres = (radius_km * 1000.0) as u32;
        let (built_for, parents) = self
            .parents
            .get_or_init(|| (metres, self.neighbourhood_parents(f64::from(radius_km))));
        if *built_for != metres {
            // Another radius than the one cached (only when engines with different settings share a
            // snapshot): compute this one city's parent directly.
            return self.parent_of(id, f64::from(radius_km));
        }
        parents.get(&id).copied()
    }

    fn parent_of(&self, id: CityId, radius_km: f64) -> Option<CityId> {
        let entry = self.entries.get(&id)?;
        if !may_collapse(entry) {
            return None;
        }
        let city = &entry.city;
        self.around(city.lat, city.lon, radius_km)
            .filter(|p| is_parent(p, city, radius_km))
            .max_by(|a, b| a.population.cmp(&b.population).then(b.id.cmp(&a.id)))
            .map(|p| p.id)
    }

    /// Every collapsing city's parent.
    fn neighbourhood_parents(&self, radius_km: f64) -> HashMap<CityId, CityId> {
        self.entries
            .keys()
            .filter_map(|&id| Some((id, self.parent_of(id, radius_km)?)))
            .collect()
    }

    /// The cities of the grid cells around (`lat`, `lon`): every city within `radius_km` of it is among them.
    fn around(&self, lat: f64, lon: f64, radius_km: f64) -> impl Iterator<Item = &City> + '_ {
        let grid = self.grid.get_or_init(|| {
            let mut grid: HashMap<(i64, i64), Vec<CityId>> = HashMap::new();
            for e in self.entries.values() {
                grid.entry(grid_cell(e.city.lat, e.city.lon))
                    .or_default()
                    .push(e.city.id);
            }
            grid
        });
        let (row, col) = grid_cell(lat, lon);
        let rows = (radius_km / (KM_PER_DEGREE * GRID_DEGREES)).ceil().max(1.0) as i64;
        // Longitude cells shrink towards the poles: look further east and west there.
        let cols = (rows as f64 / lat.to_radians().cos().max(0.05)).ceil() as i64;
        (row - rows..=row + rows)
            .flat_map(move |r| (col - cols..=col + cols).map(move |c| (r, c)))
            .flat_map(move |cell| grid.get(&cell).into_iter().flatten())
            .filter_map(move |id| self.entries.get(id))
            .map(|e| &e.city)
    }

    /// The median population of the cities whose population is known (non-zero); 0 when none is.
    pub fn median_population(&self) -> u64 {
        *self.median_population.get_or_init(|| {
            let mut known: Vec<u64> = self
                .entries
                .values()
                .map(|e| e.city.population)
                .filter(|&p| p > 0)
                .collect();
            if known.is_empty() {
                return 0;
            }
            let middle = known.len() / 2;
            *known.select_nth_unstable(middle).1
        })
    }

    /// The names (and plain-ASCII alternate names) of the stored cities that are not places of `beside`
    /// (the gazetteer's names, which the engine matches as well): an analyst's city, or a city of a table
    /// of one's own. On the world store, whose cities all come from the gazetteer, this is empty rather than
    /// a second copy. Built on the first call; every engine of a process passes the same `beside`.
    pub fn place_names(&self, beside: Option<&PlaceNames>) -> &PlaceNames {
        self.own_names.get_or_init(|| {
            PlaceNames::from_cities(
                self.entries
                    .values()
                    .map(|e| &e.city)
                    .filter(|city| beside.is_none_or(|known| !known.has_place(city.id))),
            )
        })
    }

    /// The stored city nearest to (`lat`, `lon`) within `radius_km`, with its distance; ties go to the
    /// smaller id.
    pub fn nearest_within(&self, lat: f64, lon: f64, radius_km: f64) -> Option<(CityId, f64)> {
        self.around(lat, lon, radius_km)
            .map(|c| (c.id, crate::geo::haversine_km(lat, lon, c.lat, c.lon)))
            .filter(|&(_, km)| km <= radius_km)
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
    }

    /// The city with this id and its vectors.
    pub fn get(&self, id: CityId) -> Option<&CityEntry> {
        self.entries.get(&id).map(|e| &**e)
    }

    /// Number of cities.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no city is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of support vectors over all cities.
    pub fn support_count(&self) -> usize {
        self.entries.values().map(|e| e.supports.len()).sum()
    }

    /// Every city with its vectors, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &CityEntry> {
        self.entries.values().map(|e| &**e)
    }

    /// Up to `limit` cities whose name starts with `prefix`, ignoring case, in name order (a shared name:
    /// larger population first, then id). An empty prefix lists every city in that order.
    pub fn search_prefix(&self, prefix: &str, limit: usize) -> Vec<&City> {
        let names = self.names.get_or_init(|| {
            let mut names: Vec<(String, u64, CityId)> = self
                .entries
                .values()
                .map(|e| (e.city.name.to_lowercase(), e.city.population, e.city.id))
                .collect();
            names.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
            names
        });
        let prefix = prefix.to_lowercase();
        let start = names.partition_point(|(name, _, _)| name.as_str() < prefix.as_str());
        names[start..]
            .iter()
            .take_while(|(name, _, _)| name.starts_with(&prefix))
            .filter_map(|(_, _, id)| self.entries.get(id).map(|e| &e.city))
            .take(limit)
            .collect()
    }
}

/// How many times as populous a city must be to absorb a gazetteer entry within the collapse radius.
pub const COLLAPSE_POPULATION_RATIO: u64 = 5;

/// Whether a city may be answered as a bigger one nearby: a gazetteer entry nobody labelled.
fn may_collapse(entry: &CityEntry) -> bool {
    entry.supports.is_empty() && entry.city.id < crate::data::ingest::ANALYST_CITY_IDS
}

/// Whether `parent` absorbs `city` (see [`CityCache::collapses_into`]).
fn is_parent(parent: &City, city: &City, radius_km: f64) -> bool {
    parent.id != city.id
        && parent.population >= COLLAPSE_POPULATION_RATIO * city.population.max(1)
        && crate::geo::haversine_km(parent.lat, parent.lon, city.lat, city.lon) <= radius_km
}

/// The file of the label head saved in an index directory.
const HEAD_FILE: &str = "label_head.bin";

/// A label head saved with what it was fitted on: the store's support posts (their number and highest id)
/// and the fitting settings. A store opened with the same posts and settings reads it instead of fitting
/// again (seconds at tens of thousands of labels); anything else, or a file that does not decode, refits.
#[derive(Serialize, Deserialize)]
struct SavedHead {
    posts: usize,
    last_post: Option<PostId>,
    config: HeadConfig,
    head: LabelHead,
}

/// Serialises the writes of the label head file within a process (an ingest's background refit and a
/// direct one may finish together).
static HEAD_FILE_WRITES: Mutex<()> = Mutex::new(());

impl SavedHead {
    /// The number and highest id of the support posts of `cities`.
    fn key(cities: &CityCache) -> (usize, Option<PostId>) {
        let posts = cities
            .iter()
            .flat_map(|e| e.supports.iter().map(|s| s.post));
        posts.fold((0, None), |(n, last), id| (n + 1, last.max(Some(id))))
    }

    fn load(dir: &Path, config: &HeadConfig, cities: &CityCache) -> Option<LabelHead> {
        if config.weight <= 0.0 {
            return None;
        }
        let bytes = std::fs::read(dir.join(HEAD_FILE)).ok()?;
        let (saved, _): (SavedHead, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).ok()?;
        let fresh = (saved.posts, saved.last_post) == Self::key(cities) && saved.config == *config;
        fresh.then_some(saved.head)
    }

    /// Writes the head (to a temporary name, then renamed); a failure only costs a refit at the next open.
    fn save(dir: &Path, config: &HeadConfig, cities: &CityCache, head: &LabelHead) {
        let (posts, last_post) = Self::key(cities);
        let saved = SavedHead {
            posts,
            last_post,
            config: config.clone(),
            head: head.clone(),
        };
        let _one_writer = HEAD_FILE_WRITES
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let written = bincode::serde::encode_to_vec(&saved, bincode::config::standard())
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|bytes| {
                let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, dir.join(HEAD_FILE))
            });
        if let Err(error) = written {
            tracing::warn!(%error, "saving the label head failed; it is refitted at the next open");
        }
    }
}

/// The model, the index built with it (vectors and words), the city cache and the label head fitted on the
/// store's labels: one immutable generation of the query path.
pub struct Snapshot {
    dir: PathBuf,
    model: Arc<GeoModel>,
    index: VectorIndex,
    /// The support posts' words (BM25), beside the vectors.
    lexical: LexicalIndex,
    /// Replaced whole (copy on write) when cities or support posts are added live.
    cities: RwLock<Arc<CityCache>>,
    /// The label head over the store's labelled posts; refitted (and replaced whole) after labels arrive.
    head: RwLock<Option<Arc<LabelHead>>>,
    head_config: HeadConfig,
    /// Refits asked for and done ([`Snapshot::refit_head_in_background`]).
    refits: Mutex<(u64, u64)>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("dir", &self.dir)
            .field("model", &self.model.config().model_id)
            .field("index", &self.index)
            .field("lexical", &self.lexical)
            .field("cities", &self.cities().len())
            .finish()
    }
}

impl Snapshot {
    /// Whether `dir` holds a store (it may still be empty or built by another model).
    pub fn exists(dir: &Path) -> bool {
        dir.join(RECORDS_DIR).is_dir()
    }

    /// Opens the store in `dir` for queries by `model` with the index options and label head settings of
    /// `config`, catches its lexical index up with its records, and fits the label head. Refuses a missing
    /// or empty store, and a store filled by another model ([`EngineError::ModelMismatch`]): its vectors
    /// cannot be compared with this model's.
    pub fn open(dir: &Path, model: Arc<GeoModel>, config: &EngineConfig) -> Result<Self> {
        let snapshot = Self::open_deferring_head(dir, model, config)?;
        if snapshot.head().is_none() {
            snapshot.refit_head()?;
        }
        Ok(snapshot)
    }

    /// [`Snapshot::open`], reading the saved label head if it fits the store's posts but leaving a missing
    /// or stale one unfitted: for a caller about to apply pending labels, which fits it once afterwards
    /// instead of twice.
    pub fn open_deferring_head(
        dir: &Path,
        model: Arc<GeoModel>,
        config: &EngineConfig,
    ) -> Result<Self> {
        let model_id = model.config().model_id.clone();
        Self::open_loading_model(dir, &model_id, move || Ok(model), config)
    }

    /// [`Snapshot::open_deferring_head`] for a model still to be loaded: `load` runs on a thread of its own
    /// while the graph loads on another and the city table is read on this one (opening the world store
    /// took 1.2 s on 2 cores one after the other). `model_id` is the id `load` gives its model (from the
    /// checkpoint's configuration), which the store's vectors must have been made by.
    pub fn open_loading_model(
        dir: &Path,
        model_id: &str,
        load: impl FnOnce() -> Result<Arc<GeoModel>> + Send,
        config: &EngineConfig,
    ) -> Result<Self> {
        let options = config.index_options();
        if !Self::exists(dir) {
            return Err(EngineError::NoStore {
                dir: dir.to_path_buf(),
            });
        }
        let (model, opened) = std::thread::scope(|scope| {
            let model = scope.spawn(load);
            let opened = VectorIndex::open_alongside(dir, model_id, options, CityCache::load);
            let model = model
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (model, opened)
        });
        let (index, cities) = opened?;
        let model = model?;
        debug_assert_eq!(model.config().model_id, model_id);
        if let IndexStatus::ModelMismatch { store, .. } = index.status() {
            return Err(EngineError::ModelMismatch {
                dir: dir.to_path_buf(),
                store,
                model: model_id.to_string(),
            });
        }
        if index.is_empty() {
            return Err(EngineError::EmptyStore {
                dir: dir.to_path_buf(),
            });
        }
        let cities = cities?;
        let lexical = LexicalIndex::open(dir, index.store())?;
        tracing::info!(
            store = %dir.display(),
            model = %model_id,
            cities = cities.len(),
            supports = cities.support_count(),
            status = ?index.status(),
            "opened index"
        );
        let saved = SavedHead::load(dir, &config.head, &cities);
        let snapshot = Self {
            dir: dir.to_path_buf(),
            model,
            index,
            lexical,
            cities: RwLock::new(Arc::new(cities)),
            head: RwLock::new(None),
            head_config: config.head.clone(),
            refits: Mutex::new((0, 0)),
        };
        if let Some(head) = saved {
            *snapshot
                .head
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(head));
        }
        Ok(snapshot)
    }

    /// The support posts' lexical (BM25) index.
    pub fn lexical(&self) -> &LexicalIndex {
        &self.lexical
    }

    /// The label head as of now, when the store has enough labels for one.
    pub fn head(&self) -> Option<Arc<LabelHead>> {
        self.head
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Fits the label head on every support post the store holds now and publishes it; returns it.
    pub fn refit_head(&self) -> Result<Option<Arc<LabelHead>>> {
        self.refit_head_with(&self.head_config)
    }

    /// [`Snapshot::refit_head`] with other fitting settings (an evaluation trying several).
    pub fn refit_head_with(&self, config: &HeadConfig) -> Result<Option<Arc<LabelHead>>> {
        if config.weight <= 0.0 {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let cities = self.cities();
        let vectors: HashMap<PostId, &[f32]> = cities
            .iter()
            .flat_map(|e| e.supports.iter().map(|s| (s.post, s.vector.as_slice())))
            .collect();
        if vectors.is_empty() {
            return Ok(None);
        }
        let mut texts: Vec<(PostId, CityId, String)> = Vec::with_capacity(vectors.len());
        for entry in self.index.store().support_posts_after(None) {
            let (id, post) = entry?;
            if vectors.contains_key(&id) {
                texts.push((id, post.city, post.text));
            }
        }
        let examples: Vec<LabelledExample> = texts
            .iter()
            .map(|(id, city, text)| LabelledExample {
                city: *city,
                text,
                embedding: vectors[id],
            })
            .collect();
        let head = LabelHead::fit(&examples, config).map(Arc::new);
        if let Some(head) = &head {
            tracing::info!(
                posts = head.posts(),
                cities = head.cities(),
                features = head.features(),
                seconds = started.elapsed().as_secs_f64(),
                "label head fitted"
            );
        }
        if let (Some(head), true) = (&head, *config == self.head_config) {
            SavedHead::save(&self.dir, config, &cities, head);
        }
        *self.head.write().unwrap_or_else(PoisonError::into_inner) = head.clone();
        Ok(head)
    }

    /// Refits the label head on a background thread (after live ingest: the new posts are searchable at
    /// once through the vectors and words; the head follows seconds later). Requests that arrive while a
    /// refit runs are served by one more refit once it ends.
    pub fn refit_head_in_background(self: &Arc<Self>) {
        if self.head_config.weight <= 0.0 {
            return;
        }
        let running = {
            let mut refits = self.refits.lock().unwrap_or_else(PoisonError::into_inner);
            refits.0 += 1;
            refits.0 - 1 > refits.1
        };
        if running {
            return;
        }
        let snapshot = Arc::clone(self);
        std::thread::spawn(move || loop {
            let asked = snapshot
                .refits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if let Err(error) = snapshot.refit_head() {
                tracing::warn!(%error, "refitting the label head failed; the previous head stays");
            }
            let mut refits = snapshot
                .refits
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            refits.1 = asked;
            if refits.0 == asked {
                break;
            }
        });
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model that encodes queries (and encoded the index).
    pub fn model(&self) -> &GeoModel {
        &self.model
    }

    /// The vector index.
    pub fn index(&self) -> &VectorIndex {
        &self.index
    }

    /// The cities with their vectors, as of now (a query holds one view for its whole run).
    pub fn cities(&self) -> Arc<CityCache> {
        Arc::clone(&self.cities.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Publishes a new city table (after vectors were added to the index live).
    pub fn set_cities(&self, cities: CityCache) {
        *self.cities.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(cities);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn city(id: CityId, name: &str, population: u64) -> City {
        City {
            id,
            name: name.into(),
            admin1: None,
            country: "United States".into(),
            country_code: "US".into(),
            lat: 0.0,
            lon: 0.0,
            population,
            alternate_names: Vec::new(),
        }
    }

    fn cache(cities: &[City]) -> CityCache {
        CityCache {
            entries: cities
                .iter()
                .map(|c| {
                    let entry = CityEntry {
                        city: c.clone(),
                        prompt: None,
                        supports: Vec::new(),
                    };
                    (c.id, Arc::new(entry))
                })
                .collect(),
            names: OnceLock::new(),
            parents: OnceLock::new(),
            own_names: OnceLock::new(),
            grid: OnceLock::new(),
            median_population: OnceLock::new(),
        }
    }

    fn at(mut c: City, lat: f64, lon: f64) -> City {
        c.lat = lat;
        c.lon = lon;
        c
    }

    #[test]
    fn nearest_within_finds_the_closest_city_in_reach_and_the_median_skips_unknown_populations() {
        let cities = cache(&[
            at(city(1, "Chicago", 2_700_000), 41.850, -87.650),
            at(city(3, "Evanston", 75_000), 42.041, -87.690),
            at(city(4, "Aurora", 200_000), 41.760, -88.320),
            at(city(6, "Analyst town", 0), 60.0, 179.9),
        ]);
        // Near Evanston: Evanston (1 km) before Chicago (22 km).
        assert_eq!(
            cities.nearest_within(42.05, -87.69, 50.0).map(|x| x.0),
            Some(3)
        );
        // Niles, 9 km from Evanston and 21 km from Chicago: within 5 km nothing is.
        assert_eq!(cities.nearest_within(42.03, -87.80, 5.0), None);
        // Across a grid cell border (longitude -88): Evanston 27 km, Chicago 33 km, Aurora 36 km.
        let (id, km) = cities.nearest_within(41.99, -88.01, 50.0).unwrap();
        assert_eq!(id, 3);
        assert!((km - 27.0).abs() < 1.5, "{km}");
        assert_eq!(
            cities.nearest_within(60.0, 179.95, 10.0).map(|x| x.0),
            Some(6)
        );
        // Populations 75k, 200k, 2.7M known; the analyst's 0 is not counted.
        assert_eq!(cities.median_population(), 200_000);
        assert_eq!(cache(&[]).median_population(), 0);
    }

    #[test]
    fn own_place_names_are_those_the_gazetteer_lacks() {
        let chicago = at(city(1, "Chicago", 2_700_000), 41.850, -87.650);
        let analysts = at(city(7, "Bucktown Studios", 0), 41.92, -87.68);
        let cities = cache(&[chicago.clone(), analysts]);
        let gazetteer = PlaceNames::from_cities([&chicago]);
        let own = cities.place_names(Some(&gazetteer));
        assert!(own.has_place(7) && !own.has_place(1));
        assert_eq!(
            own.find("Shooting at Bucktown Studios today", &|_| true)[0].places[0].id,
            7
        );
        // Without a gazetteer every stored city is its own.
        let alone = cache(&[chicago]);
        assert!(alone.place_names(None).has_place(1));
    }

    #[test]
    fn neighbourhoods_collapse_into_the_big_city_nearby_but_labelled_and_distant_ones_do_not() {
        let plain = cache(&[
            at(city(1, "Chicago", 2_700_000), 41.850, -87.650),
            at(city(2, "Chicago Loop", 30_000), 41.884, -87.632),
            at(city(3, "Evanston", 75_000), 42.041, -87.690),
            at(city(4, "Aurora", 200_000), 41.760, -88.320),
            at(city(5, "Cicero", 84_000), 41.845, -87.754),
        ]);
        // Within 10 km and 5x smaller: collapses. Evanston (22 km) and Aurora (56 km) stand alone; so does
        // Chicago itself.
        assert_eq!(plain.collapses_into(2, 10.0), Some(1));
        assert_eq!(plain.collapses_into(5, 10.0), Some(1));
        assert_eq!(plain.collapses_into(3, 10.0), None);
        assert_eq!(plain.collapses_into(4, 10.0), None);
        assert_eq!(plain.collapses_into(1, 10.0), None);
        assert_eq!(plain.collapses_into(3, 0.0), None, "0 switches it off");
        // Another radius than the cached one is answered too.
        assert_eq!(plain.collapses_into(3, 30.0), Some(1));
        // A city with support posts was labelled on purpose.
        let labelled = plain.with_additions(
            &[],
            Vec::new(),
            vec![(
                2,
                SupportVector {
                    post: 9,
                    vector: vec![1.0],
                },
            )],
        );
        assert_eq!(labelled.collapses_into(2, 10.0), None);
        assert_eq!(labelled.collapses_into(5, 10.0), Some(1));
        // So was a city an analyst created, even before its first example.
        let id = crate::data::ingest::ANALYST_CITY_IDS + 1;
        let created = plain.with_additions(
            &[at(city(id, "Near North", 1_000), 41.900, -87.634)],
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(created.collapses_into(id, 10.0), None);
    }

    #[test]
    fn prefix_search_ignores_case_and_orders_by_name_then_population() {
        let cache = cache(&[
            city(1, "Springfield", 100),
            city(2, "Springfield", 5000),
            city(3, "Spokane", 200),
            city(4, "Austin", 900),
            city(5, "spring Hill", 10),
            city(6, "Österreich", 1),
        ]);
        let ids = |prefix: &str, limit| -> Vec<CityId> {
            cache
                .search_prefix(prefix, limit)
                .iter()
                .map(|c| c.id)
                .collect()
        };
        assert_eq!(ids("SPRING", 10), [5, 2, 1]);
        assert_eq!(ids("sp", 2), [3, 5]);
        assert_eq!(ids("springfield", 10), [2, 1]);
        assert_eq!(ids("ö", 10), [6]);
        assert_eq!(ids("Ö", 10), [6]);
        assert!(ids("x", 10).is_empty());
        assert_eq!(ids("", 3), [4, 3, 5]);
        assert_eq!(ids("", 100).len(), 6);
    }
}
