//! Evaluation of few-shot geolocation on a labelled benchmark.
//!
//! Four prediction rules are compared on the same test posts:
//! - **zero-shot**: the base encoder, cosine between the post and each city's prompt;
//! - **centroid**: the base (frozen) encoder, cosine to the mean of each city's K support posts;
//! - **TLC**: the trained encoders, cosine to the prompts (the paper's own rule);
//! - **TLC+TLM**: the product's rule: each city scored by its prompt similarity blended with its best support
//!   post similarity, the top-k cities reranked by the TLM head (TLM logit + retrieval score / tau).

pub mod benchmark;
pub mod metrics;

use candle_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{names_city, CityPost};
use crate::geo::CityTable;
use crate::model::tokenize::length_buckets;
use crate::model::{ForwardMode, GeoModel, ModelError};
pub use metrics::{MethodReport, Metrics, Prediction};

/// How many ranked cities each prediction keeps (Acc@5 needs 5).
const KEEP_RANKED: usize = 10;

/// Settings of the product's retrieval + rerank rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RerankConfig {
    /// Cities reranked by the TLM head.
    pub top_k: usize,
    /// Weight of the prompt similarity against the best support-post similarity (1.0: prompts only).
    pub prompt_weight: f32,
    /// Weight of the retrieval score (over tau) added to the TLM logit; 0 ranks by the head alone.
    pub retrieval_weight: f32,
}

impl Default for RerankConfig {
    fn default() -> Self {
        Self {
            top_k: 10,
            prompt_weight: 0.9,
            retrieval_weight: 1.0,
        }
    }
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
            }
        })
        .collect()
}

/// One post's rankings within a bucket: by prompt cosine, and by the blended retrieval + rerank.
type BucketRanking = (Vec<usize>, Vec<usize>);

/// Rankings of a trained model: by prompt cosine (TLC) and by the product's blended retrieval + TLM rerank.
pub struct TrainedRankings {
    /// TLC rule.
    pub tlc: Vec<Vec<usize>>,
    /// TLC+TLM rule.
    pub reranked: Vec<Vec<usize>>,
}

/// Ranks `test` posts with a trained model over all cities of `table`, using `support` posts for the blend.
pub fn trained_rankings(
    model: &GeoModel,
    table: &CityTable,
    test: &[CityPost],
    support: &[CityPost],
    config: &RerankConfig,
) -> Result<TrainedRankings, ModelError> {
    let encoder = model.post_encoder();
    let render = |p: &CityPost| model.config().post_input.render(&p.post);
    let cities: Vec<&crate::geo::City> = table.cities().iter().collect();
    let encoded_cities = model.encode_cities(&cities, ForwardMode::Inference)?;
    let support_texts: Vec<String> = support.iter().map(render).collect();
    let support_refs: Vec<&str> = support_texts.iter().map(String::as_str).collect();
    let support_matrix = rows_tensor(&encoder.embed(&support_refs)?, model.device())?;
    let support_city: Vec<usize> = support.iter().map(|p| p.city).collect();
    let tau = model.config().tau as f32;
    let use_head = model.config().head_trained;

    let texts: Vec<String> = test.iter().map(render).collect();
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = encoder.tokenizer().tokenize(&text_refs)?;
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    let settings = encoder.settings();
    let buckets = length_buckets(&lengths, settings.batch_size, settings.max_batch_tokens);
    let ranked: Vec<(Vec<usize>, Vec<BucketRanking>)> = buckets
        .into_par_iter()
        .map(|bucket| {
            let refs: Vec<&[u32]> = bucket.iter().map(|&i| ids[i].as_slice()).collect();
            let batch = encoder.tokenizer().batch(&refs, model.device())?;
            let posts = encoder.encode_batch(&batch, ForwardMode::Inference)?;
            let prompt_sims = posts
                .pooled
                .matmul(&encoded_cities.pooled.t()?)?
                .to_vec2::<f32>()?;
            let support_sims = if support.is_empty() {
                vec![Vec::new(); bucket.len()]
            } else {
                posts
                    .pooled
                    .matmul(&support_matrix.t()?)?
                    .to_vec2::<f32>()?
            };
            let mut rows = Vec::with_capacity(bucket.len());
            let (mut post_rows, mut city_rows, mut retrieval) =
                (Vec::new(), Vec::new(), Vec::new());
            for (row, (prompt, supports)) in prompt_sims.iter().zip(&support_sims).enumerate() {
                let blended = blend(prompt, supports, &support_city, config.prompt_weight);
                let candidates = top_indices(&blended, config.top_k.max(1));
                for &c in &candidates {
                    post_rows.push(row as u32);
                    city_rows.push(c as u32);
                    retrieval.push(blended[c]);
                }
                rows.push((top_indices(prompt, KEEP_RANKED), candidates));
            }
            if use_head {
                let logits = model
                    .match_logits(
                        &posts,
                        &post_rows,
                        &encoded_cities,
                        &city_rows,
                        ForwardMode::Inference,
                    )?
                    .to_vec1::<f32>()?;
                for (row, (_, candidates)) in rows.iter_mut().enumerate() {
                    let k = candidates.len();
                    let base = row * k;
                    let final_scores: Vec<f32> = (0..k)
                        .map(|j| {
                            logits[base + j] + config.retrieval_weight * retrieval[base + j] / tau
                        })
                        .collect();
                    let order = top_indices(&final_scores, k);
                    *candidates = order.into_iter().map(|j| candidates[j]).collect();
                }
            }
            Ok((bucket, rows))
        })
        .collect::<Result<_, ModelError>>()?;
    let mut tlc = vec![Vec::new(); test.len()];
    let mut reranked = vec![Vec::new(); test.len()];
    for (bucket, rows) in ranked {
        for (index, (by_prompt, by_rerank)) in bucket.into_iter().zip(rows) {
            tlc[index] = by_prompt;
            reranked[index] = by_rerank;
        }
    }
    Ok(TrainedRankings { tlc, reranked })
}

/// Per city: `w * prompt + (1 - w) * best support similarity`; cities without support keep the prompt score.
pub fn blend(
    prompt: &[f32],
    supports: &[f32],
    support_city: &[usize],
    prompt_weight: f32,
) -> Vec<f32> {
    let mut best = vec![f32::NEG_INFINITY; prompt.len()];
    for (&sim, &city) in supports.iter().zip(support_city) {
        best[city] = best[city].max(sim);
    }
    prompt
        .iter()
        .zip(&best)
        .map(|(&p, &s)| {
            if s.is_finite() {
                prompt_weight * p + (1.0 - prompt_weight) * s
            } else {
                p
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_uses_the_best_support_and_keeps_prompt_only_cities() {
        let blended = blend(&[0.2, 0.4, 0.6], &[0.9, 0.1, 0.5], &[0, 0, 1], 0.5);
        assert_eq!(blended, vec![0.55, 0.45, 0.6]);
        assert_eq!(top_indices(&blended, 2), vec![2, 0]);
    }

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
