//! Evaluation of few-shot geolocation on a labelled benchmark.
//!
//! Four prediction rules are compared on the same test posts:
//! - **zero-shot**: the base encoder, cosine between the post and each city's prompt;
//! - **centroid**: the base (frozen) encoder, cosine to the mean of each city's K support posts;
//! - **TLC**: the trained encoders, cosine to the prompts (the paper's own rule), every city scored exactly;
//! - **engine**: the product itself: a store built from the trained model, the cities and the K support posts,
//!   queried through [`Engine::locate`] (HNSW shortlist, prompt + support blend, TLM rerank), so every figure
//!   of this rule is a figure of what `locate` and `serve` answer.

pub mod benchmark;
pub mod metrics;

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::Tensor;
use contrastgeo_index::SupportPost;
use rayon::prelude::*;

use crate::data::{names_city, CityPost};
use crate::engine::{Answer, Engine, EngineConfig, PostQuery};
use crate::geo::{CityId, CityTable};
use crate::model::{GeoModel, ModelError};
pub use benchmark::EvalError;
pub use metrics::{MethodReport, Metrics, Prediction};

/// How many ranked cities each prediction keeps (Acc@5 needs 5).
const KEEP_RANKED: usize = 10;

/// Test posts located per engine call: bounds memory and paces progress.
const LOCATE_CHUNK: usize = 4096;

/// A temporary store of the benchmark's cities and support posts, served by the product's [`Engine`].
pub struct EvalStore {
    engine: Engine,
    position_of: HashMap<CityId, usize>,
    /// Removed (with the store) when the evaluation store is dropped.
    _dir: tempfile::TempDir,
}

impl EvalStore {
    /// Builds the store for `model` from every city of `table` and the `support` posts (rendered as the model
    /// reads posts), and opens an engine on it with `config`.
    pub fn build(
        model: Arc<GeoModel>,
        table: &CityTable,
        support: &[CityPost],
        config: EngineConfig,
    ) -> Result<Self, EvalError> {
        config.validate()?;
        let dir = tempfile::Builder::new()
            .prefix("contrastgeo-eval-")
            .tempdir()
            .map_err(EvalError::TempStore)?;
        let store = dir.path().join("store");
        let post_input = model.config().post_input;
        let supports: Vec<SupportPost> = support
            .iter()
            .map(|p| SupportPost {
                text: post_input.render(&p.post),
                city: table.cities()[p.city].id,
                source: "benchmark support".into(),
            })
            .collect();
        Engine::build_index(&store, &model, table.cities(), &supports, &config, &|_| {})?;
        let engine = Engine::open(&store, model, config)?;
        let position_of = table
            .cities()
            .iter()
            .enumerate()
            .map(|(position, city)| (city.id, position))
            .collect();
        Ok(Self {
            engine,
            position_of,
            _dir: dir,
        })
    }

    /// The engine serving the store.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine's answers for `texts`, in order.
    pub fn answers(&self, texts: &[&str]) -> Result<Vec<Answer>, EvalError> {
        let posts: Vec<PostQuery> = texts.iter().map(|&t| PostQuery::text(t)).collect();
        self.answers_posts(&posts)
    }

    /// The engine's answers for `posts` (with their profile locations), in order.
    pub fn answers_posts(&self, posts: &[PostQuery]) -> Result<Vec<Answer>, EvalError> {
        let mut answers = Vec::with_capacity(posts.len());
        for chunk in posts.chunks(LOCATE_CHUNK) {
            answers.extend(self.engine.locate_posts(chunk)?);
        }
        Ok(answers)
    }

    /// Table positions of an answer's shortlist, best first.
    pub fn ranking(&self, answer: &Answer) -> Vec<usize> {
        answer
            .top_k
            .iter()
            .filter_map(|c| self.position_of.get(&c.city_id).copied())
            .collect()
    }

    /// Table position of a city id of the store.
    pub fn position(&self, city: CityId) -> Option<usize> {
        self.position_of.get(&city).copied()
    }
}

/// The TLC rule's rankings: each of `texts` by cosine to every city prompt of `table` under `model`.
pub fn tlc_rankings(
    model: &GeoModel,
    table: &CityTable,
    texts: &[&str],
) -> Result<Vec<Vec<usize>>, ModelError> {
    let cities: Vec<&crate::geo::City> = table.cities().iter().collect();
    let city_vectors = model.city_vectors(&cities)?;
    rank_by_cosine(&model.post_encoder().embed(texts)?, &city_vectors)
}

/// Indices of the `keep` largest values, best first.
pub fn top_indices(scores: &[f32], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(keep);
    order
}

/// Rankings of every post by cosine to each city vector.
pub fn rank_by_cosine(
    posts: &[Vec<f32>],
    cities: &[Vec<f32>],
) -> Result<Vec<Vec<usize>>, ModelError> {
    let device = candle_core::Device::Cpu;
    let city_matrix = rows_tensor(cities, &device)?;
    posts
        .par_chunks(1024)
        .map(|chunk| {
            let sims = rows_tensor(chunk, &device)?
                .matmul(&city_matrix.t()?)?
                .to_vec2::<f32>()?;
            Ok(sims
                .iter()
                .map(|row| top_indices(row, KEEP_RANKED))
                .collect::<Vec<_>>())
        })
        .collect::<Result<Vec<_>, ModelError>>()
        .map(|chunks| chunks.into_iter().flatten().collect())
}

/// Per-city unit mean of support vectors (a zero vector for a city without support).
pub fn centroids(vectors: &[Vec<f32>], cities_of: &[usize], n_cities: usize) -> Vec<Vec<f32>> {
    let width = vectors.first().map_or(0, Vec::len);
    let mut sums = vec![vec![0f32; width]; n_cities];
    for (v, &c) in vectors.iter().zip(cities_of) {
        for (s, x) in sums[c].iter_mut().zip(v) {
            *s += x;
        }
    }
    for s in &mut sums {
        let norm = s.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            s.iter_mut().for_each(|x| *x /= norm);
        }
    }
    sums
}

fn rows_tensor(rows: &[Vec<f32>], device: &candle_core::Device) -> Result<Tensor, ModelError> {
    let width = rows.first().map_or(0, Vec::len);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (rows.len(), width), device)?)
}

/// Turns rankings of `test` posts into predictions.
pub fn to_predictions(
    test: &[CityPost],
    rankings: Vec<Vec<usize>>,
    table: &CityTable,
) -> Vec<Prediction> {
    test.iter()
        .zip(rankings)
        .map(|(post, ranked)| {
            let city = &table.cities()[post.city];
            Prediction {
                truth: post.city,
                ranked,
                lat: post.post.lat.unwrap_or(city.lat),
                lon: post.post.lon.unwrap_or(city.lon),
                names_city: names_city(&post.post.text, city),
                has_profile: post
                    .post
                    .user_location
                    .as_deref()
                    .is_some_and(|l| !l.trim().is_empty()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centroids_are_unit_means_per_city() {
        let c = centroids(
            &[vec![1.0, 0.0], vec![0.0, 1.0], vec![3.0, 4.0]],
            &[0, 0, 2],
            3,
        );
        let s = std::f32::consts::FRAC_1_SQRT_2;
        assert!((c[0][0] - s).abs() < 1e-6 && (c[0][1] - s).abs() < 1e-6);
        assert_eq!(c[1], vec![0.0, 0.0]);
        assert!((c[2][0] - 0.6).abs() < 1e-6);
    }
}
