//! The TLM rerank: the matching head scores each (post, shortlisted city) pair, and the logit is added to
//! the retrieval score divided by the contrastive temperature.
//!
//! Only used when the model's head was trained (`GeoModelConfig::head_trained`); an untrained head would
//! only add noise. Posts are encoded once for both retrieval and the head (the cross-attention fusion
//! needs their token states); the shortlisted cities of a group of posts are encoded together, once each.

use std::collections::HashMap;

use super::error::{EngineError, Result};
use super::retrieve::CityScore;
use super::snapshot::CityCache;
use crate::geo::{City, CityId};
use crate::model::{EncodedTexts, ForwardMode, GeoModel};

/// TLM logits for every shortlisted city of every post of a group: `logits[p][c]` is the logit of post row
/// `p` of `posts` with `shortlists[p][c]`. At most `pairs_per_batch` pairs go through the head at once.
pub fn tlm_logits(
    model: &GeoModel,
    posts: &EncodedTexts,
    shortlists: &[Vec<CityScore>],
    cities: &CityCache,
    pairs_per_batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut row_of: HashMap<CityId, u32> = HashMap::new();
    let mut unique: Vec<&City> = Vec::new();
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    for (post_row, shortlist) in shortlists.iter().enumerate() {
        for scored in shortlist {
            let entry = cities
                .get(scored.city)
                .ok_or(EngineError::NoCandidates { index: post_row })?;
            let city_row = *row_of.entry(scored.city).or_insert_with(|| {
                unique.push(&entry.city);
                (unique.len() - 1) as u32
            });
            pairs.push((post_row as u32, city_row));
        }
    }
    if pairs.is_empty() {
        return Ok(shortlists.iter().map(|_| Vec::new()).collect());
    }
    let encoded_cities = model.encode_cities(&unique, ForwardMode::Inference)?;
    let mut flat = Vec::with_capacity(pairs.len());
    for batch in pairs.chunks(pairs_per_batch.max(1)) {
        let post_rows: Vec<u32> = batch.iter().map(|p| p.0).collect();
        let city_rows: Vec<u32> = batch.iter().map(|p| p.1).collect();
        let logits = model.match_logits(
            posts,
            &post_rows,
            &encoded_cities,
            &city_rows,
            ForwardMode::Inference,
        )?;
        flat.extend(
            logits
                .to_dtype(candle_core::DType::F32)
                .and_then(|l| l.to_vec1::<f32>())
                .map_err(crate::model::ModelError::from)?,
        );
    }
    let mut flat = flat.into_iter();
    Ok(shortlists
        .iter()
        .map(|shortlist| flat.by_ref().take(shortlist.len()).collect())
        .collect())
}
