//! The TLM rerank: the matching head scores each (post, shortlisted city) pair, and the logit is added to
//! the retrieval score divided by the contrastive temperature.
//!
//! Only used when the model's head was trained (`GeoModelConfig::head_trained`); an untrained head would
//! only add noise. Posts are encoded once for both retrieval and the head (the cross-attention fusion
//! needs their token states); the shortlisted cities of a group of posts are encoded together, once each.

use std::collections::HashMap;

use super::error::{EngineError, Result};
use super::retrieve::CityScore;
use super::snapshot::{CityCache, CityEntry};
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
    let mut unique: Vec<&CityEntry> = Vec::new();
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    for (post_row, shortlist) in shortlists.iter().enumerate() {
        for scored in shortlist {
            let entry = cities
                .get(scored.city)
                .ok_or(EngineError::NoCandidates { index: post_row })?;
            let city_row = *row_of.entry(scored.city).or_insert_with(|| {
                unique.push(entry);
                (unique.len() - 1) as u32
            });
            pairs.push((post_row as u32, city_row));
        }
    }
    if pairs.is_empty() {
        return Ok(shortlists.iter().map(|_| Vec::new()).collect());
    }
    let encoded_cities = match stored_prompt_encoding(model, &unique)? {
        Some(encoded) => encoded,
        None => {
            let records: Vec<&City> = unique.iter().map(|e| &e.city).collect();
            model.encode_cities(&records, ForwardMode::Inference)?
        }
    };
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

/// The cities' stored prompt vectors as an encoding, when that is exactly what the head would get from
/// re-encoding the prompts: a fusion of pooled vectors only (not cross-attention, which reads token states)
/// and a single prompt template (a stored multi-template vector is re-normalised, the head's input is not).
/// Re-encoding the shortlisted prompts of every group of posts otherwise doubles the cost of a query.
fn stored_prompt_encoding(model: &GeoModel, cities: &[&CityEntry]) -> Result<Option<EncodedTexts>> {
    if model.config().fusion.needs_tokens() || model.config().prompts.templates().len() != 1 {
        return Ok(None);
    }
    let Some(rows) = cities
        .iter()
        .map(|e| e.prompt.as_deref())
        .collect::<Option<Vec<&[f32]>>>()
    else {
        return Ok(None);
    };
    let width = rows.first().map_or(0, |r| r.len());
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    let device = model.device();
    let pooled = candle_core::Tensor::from_vec(flat, (rows.len(), width), device)
        .map_err(crate::model::ModelError::from)?;
    // The pooled-vector fusions never read token states; a one-token stand-in keeps the type whole.
    let hidden = pooled
        .unsqueeze(1)
        .map_err(crate::model::ModelError::from)?;
    let mask = candle_core::Tensor::ones((rows.len(), 1), candle_core::DType::U32, device)
        .map_err(crate::model::ModelError::from)?;
    Ok(Some(EncodedTexts {
        pooled,
        hidden,
        mask,
    }))
}
