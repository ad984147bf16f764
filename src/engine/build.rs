//! Building an index: cities and support posts into sled, city prompts and support posts through the model
//! into vectors, the HNSW graph dumped beside them.
//!
//! A build always produces a complete new store. It is written into a staging directory beside the target
//! (`.NAME.building-PID`) and renamed into place at the end, so a reader never sees half an index and a
//! failed build leaves the old one untouched. The previous store, if any, is renamed aside first and deleted
//! after the swap (a crash between the two renames leaves it as `.NAME.old-PID`).

use std::path::{Path, PathBuf};

use std::time::Instant;

use contrastgeo_index::{IndexOptions, PostId, SupportPost, VectorIndex, VectorKind, VectorMeta};
use serde::Serialize;

use super::error::{EngineError, Result};
use crate::atomic_dir;
use crate::geo::City;
use crate::model::GeoModel;

/// Cities or support posts embedded and inserted per round: bounds memory and paces progress reports.
const EMBED_CHUNK: usize = 1024;

/// A stage of [`build_index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStage {
    /// Embedding city prompts.
    Prompts,
    /// Embedding support posts.
    Supports,
    /// Writing the graph dump.
    Graph,
}

/// How far a build has got within its current stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildProgress {
    /// The stage.
    pub stage: BuildStage,
    /// Items done in this stage.
    pub done: usize,
    /// Items in this stage.
    pub total: usize,
}

/// What a build wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildReport {
    /// The store directory.
    pub dir: PathBuf,
    /// The model version recorded in the store.
    pub model_version: String,
    /// Cities stored (one prompt vector each).
    pub cities: usize,
    /// Support posts stored (one vector each).
    pub supports: usize,
    /// Wall-clock seconds of the whole build.
    pub seconds: f64,
}

/// Builds a complete store in `dir` (replacing any store there) for queries by `model`: the cities with one
/// prompt vector each ([`GeoModel::city_vectors`]), the support posts with one vector each (the post
/// encoder), the model version `model.config().model_id`, and a dump of the HNSW graph. Every support post
/// must be about one of `cities`.
pub fn build_index(
    dir: &Path,
    model: &GeoModel,
    cities: &[City],
    support: &[SupportPost],
    options: IndexOptions,
    progress: &dyn Fn(BuildProgress),
) -> Result<BuildReport> {
    let started = Instant::now();
    check_inputs(cities, support)?;
    atomic_dir::remove_stale_siblings(dir);
    let staging = atomic_dir::sibling(dir, "building").map_err(EngineError::io(dir))?;
    atomic_dir::remove_dir_if_present(&staging).map_err(EngineError::io(&staging))?;
    fill_store(&staging, model, cities, support, options, 0, progress)?;
    atomic_dir::sync_tree(&staging).map_err(EngineError::io(&staging))?;
    atomic_dir::replace_dir(&staging, dir).map_err(EngineError::io(dir))?;
    let report = BuildReport {
        dir: dir.to_path_buf(),
        model_version: model.config().model_id.clone(),
        cities: cities.len(),
        supports: support.len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(?report, "index built");
    Ok(report)
}

pub(crate) fn check_inputs(cities: &[City], support: &[SupportPost]) -> Result<()> {
    if cities.is_empty() {
        return Err(EngineError::NoCities);
    }
    let mut ids = std::collections::HashSet::with_capacity(cities.len());
    if let Some(city) = cities.iter().find(|c| !ids.insert(c.id)) {
        return Err(EngineError::DuplicateCity(city.id));
    }
    if let Some((index, post)) = support
        .iter()
        .enumerate()
        .find(|(_, p)| !ids.contains(&p.city))
    {
        return Err(EngineError::UnknownSupportCity {
            index,
            city: post.city,
        });
    }
    if let Some(index) = support.iter().position(|p| p.text.trim().is_empty()) {
        return Err(crate::model::ModelError::EmptyText { index }.into());
    }
    Ok(())
}

/// Writes everything into a fresh index at `dir` and records `label_watermark` (the last label of the
/// store's log it holds); the index is closed when this returns.
pub(crate) fn fill_store(
    dir: &Path,
    model: &GeoModel,
    cities: &[City],
    support: &[SupportPost],
    options: IndexOptions,
    label_watermark: u64,
    progress: &dyn Fn(BuildProgress),
) -> Result<()> {
    let index = VectorIndex::open(dir, &model.config().model_id, options)?;
    let store = index.store();
    store.put_cities(cities)?;
    let post_ids = store.add_support_posts(support)?;
    store.flush()?;

    let report = |stage, done, total| {
        progress(BuildProgress { stage, done, total });
    };
    report(BuildStage::Prompts, 0, cities.len());
    for (n, chunk) in cities.chunks(EMBED_CHUNK).enumerate() {
        let refs: Vec<&City> = chunk.iter().collect();
        let vectors = model.city_vectors(&refs)?;
        let rows: Vec<(VectorMeta, Vec<f32>)> = chunk
            .iter()
            .zip(vectors)
            .map(|(city, vector)| (prompt_meta(city), vector))
            .collect();
        index.insert(&rows)?;
        report(
            BuildStage::Prompts,
            (n * EMBED_CHUNK + chunk.len()).min(cities.len()),
            cities.len(),
        );
    }

    report(BuildStage::Supports, 0, support.len());
    let posts: Vec<(&SupportPost, PostId)> = support.iter().zip(post_ids).collect();
    for (n, chunk) in posts.chunks(EMBED_CHUNK).enumerate() {
        let texts: Vec<&str> = chunk.iter().map(|(p, _)| p.text.as_str()).collect();
        let vectors = model.post_encoder().embed(&texts)?;
        let rows: Vec<(VectorMeta, Vec<f32>)> = chunk
            .iter()
            .zip(vectors)
            .map(|((post, id), vector)| {
                let meta = VectorMeta {
                    city: post.city,
                    kind: VectorKind::Support,
                    post: Some(*id),
                };
                (meta, vector)
            })
            .collect();
        index.insert(&rows)?;
        report(
            BuildStage::Supports,
            (n * EMBED_CHUNK + chunk.len()).min(support.len()),
            support.len(),
        );
    }

    // The support posts' words, indexed from sled like the graph is (see contrastgeo_index::lexical).
    drop(contrastgeo_index::LexicalIndex::open(dir, store)?);

    report(BuildStage::Graph, 0, 1);
    store.set_label_watermark(label_watermark)?;
    index.dump()?;
    store.flush()?;
    report(BuildStage::Graph, 1, 1);
    Ok(())
}

fn prompt_meta(city: &City) -> VectorMeta {
    VectorMeta {
        city: city.id,
        kind: VectorKind::Prompt,
        post: None,
    }
}
