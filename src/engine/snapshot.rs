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
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use contrastgeo_index::{IndexOptions, IndexStatus, PostId, Store, VectorIndex, VectorKind};

use super::error::{EngineError, Result};
use crate::geo::{City, CityId};
use crate::model::GeoModel;

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
        }
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

/// The model, the index built with it, and the city cache: one immutable generation of the query path.
pub struct Snapshot {
    dir: PathBuf,
    model: Arc<GeoModel>,
    index: VectorIndex,
    /// Replaced whole (copy on write) when cities or support posts are added live.
    cities: RwLock<Arc<CityCache>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("dir", &self.dir)
            .field("model", &self.model.config().model_id)
            .field("index", &self.index)
            .field("cities", &self.cities().len())
            .finish()
    }
}

impl Snapshot {
    /// Whether `dir` holds a store (it may still be empty or built by another model).
    pub fn exists(dir: &Path) -> bool {
        dir.join(RECORDS_DIR).is_dir()
    }

    /// Opens the store in `dir` for queries by `model`. Refuses a missing or empty store, and a store filled
    /// by another model ([`EngineError::ModelMismatch`]): its vectors cannot be compared with this model's.
    pub fn open(dir: &Path, model: Arc<GeoModel>, options: IndexOptions) -> Result<Self> {
        if !Self::exists(dir) {
            return Err(EngineError::NoStore {
                dir: dir.to_path_buf(),
            });
        }
        let model_id = model.config().model_id.clone();
        let index = VectorIndex::open(dir, &model_id, options)?;
        if let IndexStatus::ModelMismatch { store, .. } = index.status() {
            return Err(EngineError::ModelMismatch {
                dir: dir.to_path_buf(),
                store,
                model: model_id,
            });
        }
        if index.is_empty() {
            return Err(EngineError::EmptyStore {
                dir: dir.to_path_buf(),
            });
        }
        let cities = CityCache::load(index.store())?;
        tracing::info!(
            store = %dir.display(),
            model = %model_id,
            cities = cities.len(),
            supports = cities.support_count(),
            status = ?index.status(),
            "opened index"
        );
        Ok(Self {
            dir: dir.to_path_buf(),
            model,
            index,
            cities: RwLock::new(Arc::new(cities)),
        })
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
        }
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
