//! The training loop.
//!
//! Each step takes a batch of support posts, re-encodes the location prompts of the step's candidate cities
//! (so the location side trains too; all cities when there are at most `max_cities_per_step`, else the batch's
//! own cities plus a random sample), computes `TLC + lambda * TLM` and updates encoders and head with AdamW.

use std::collections::HashSet;
use std::time::Instant;

use candle_core::Tensor;
use candle_core::Var;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::objectives::{sample_hard_negatives, tlc_loss_scaled, NegativeSampling};
use crate::data::CityPost;
use crate::geo::CityTable;
use crate::model::fusion::binary_cross_entropy_with_logits;
use crate::model::{ForwardMode, GeoModel, ModelError};

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A tensor op failed.
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
    /// The configuration or data cannot train anything.
    #[error("cannot train: {0}")]
    Invalid(String),
}

/// Training hyper-parameters (all have defaults; see `contrastgeo train --help`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Passes over the support posts.
    pub epochs: usize,
    /// At least this many optimiser steps, whatever the number of posts (1-shot sets are tiny).
    pub min_steps: usize,
    /// Posts per step.
    pub batch_size: usize,
    /// Peak learning rate of the encoders.
    pub lr: f64,
    /// Peak learning rate of the TLM head.
    pub head_lr: f64,
    /// Fraction of the steps spent warming the learning rate up from 0.
    pub warmup_ratio: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Use the contrastive objective.
    pub use_tlc: bool,
    /// Use the matching objective.
    pub use_tlm: bool,
    /// Weight of TLM in the total loss.
    pub lambda_tlm: f64,
    /// Hard negatives per post for TLM.
    pub negatives: usize,
    /// How hard negatives are chosen.
    pub negative_sampling: NegativeSampling,
    /// Keep the word-embedding matrix fixed (a third of the weights; few-shot data barely moves it).
    pub freeze_word_embeddings: bool,
    /// Most candidate cities whose prompts are re-encoded per step.
    pub max_cities_per_step: usize,
    /// Multiplier on the checkpoint's dropout probabilities while training.
    pub dropout_scale: f32,
    /// Seed of shuffling and negative sampling.
    pub seed: u64,
    /// Learn the contrastive temperature (kept within [0.01, 1]) instead of fixing it.
    pub learn_tau: bool,
    /// Class-balanced epochs: each epoch takes at most this many posts of each city, drawn afresh, so a
    /// city with thousands of labels does not drown one with twenty (macro accuracy). `None`: every post.
    pub max_posts_per_city: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 3,
            min_steps: 40,
            batch_size: 32,
            lr: 1e-4,
            head_lr: 3e-3,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            use_tlc: true,
            use_tlm: true,
            lambda_tlm: 1.0,
            negatives: 6,
            negative_sampling: NegativeSampling::Softmax,
            freeze_word_embeddings: true,
            max_cities_per_step: 256,
            dropout_scale: 1.0,
            seed: 0,
            learn_tau: false,
            max_posts_per_city: None,
        }
    }
}

/// What one step did, for progress display.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// 1-based step.
    pub step: usize,
    /// Total steps.
    pub steps: usize,
    /// Total loss.
    pub loss: f32,
    /// TLC part.
    pub tlc: f32,
    /// TLM part.
    pub tlm: f32,
    /// Posts per second so far.
    pub posts_per_s: f64,
}

/// Summary of a training run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrainReport {
    /// Optimiser steps taken.
    pub steps: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Mean loss of the first and the last tenth of the steps.
    pub first_loss: f32,
    /// See `first_loss`.
    pub last_loss: f32,
    /// Posts per second.
    pub posts_per_s: f64,
    /// CRC-32 of the training data (post ids/texts and cities), recorded in the checkpoint.
    pub data_hash: String,
}

/// Learning-rate multiplier at `step` of `total`: linear warm-up, then linear decay to 0.
pub fn lr_factor(step: usize, total: usize, warmup_ratio: f64) -> f64 {
    let warmup = ((total as f64) * warmup_ratio).ceil().max(1.0);
    let s = step as f64 + 1.0;
    if s <= warmup {
        s / warmup
    } else {
        ((total as f64 - s + 1.0) / (total as f64 - warmup + 1.0)).clamp(0.0, 1.0)
    }
}

/// Trains `model` in place on `posts` (bound to `cities`) and marks its head trained when TLM was used.
pub fn train(
    model: &mut GeoModel,
    cities: &CityTable,
    posts: &[CityPost],
    config: &TrainConfig,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<TrainReport, TrainError> {
    if posts.is_empty() {
        return Err(TrainError::Invalid("no training posts".into()));
    }
    if !config.use_tlc && !config.use_tlm {
        return Err(TrainError::Invalid(
            "both objectives are switched off".into(),
        ));
    }
    if cities.len() < 2 {
        return Err(TrainError::Invalid(
            "at least two cities are needed to contrast".into(),
        ));
    }
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let batch_size = config.batch_size.max(1);
    let by_city = posts_by_city(posts);
    let cap = config.max_posts_per_city.map(|cap| cap.max(1));
    let epoch_posts = match cap {
        Some(cap) => by_city.iter().map(|p| p.len().min(cap)).sum(),
        None => posts.len(),
    };
    let per_epoch = epoch_posts.div_ceil(batch_size);
    let total_steps = (per_epoch * config.epochs.max(1)).max(config.min_steps);
    let mode = ForwardMode::Train {
        dropout_scale: config.dropout_scale,
    };
    let tau = model.config().tau;
    let post_input = model.config().post_input;

    let encoder_vars = trainable_encoder_vars(model, config.freeze_word_embeddings);
    let mut encoder_opt = AdamW::new(
        encoder_vars,
        ParamsAdamW {
            lr: config.lr,
            weight_decay: config.weight_decay,
            ..Default::default()
        },
    )?;
    // ln(1/tau): trained with the head when `learn_tau`, else a constant.
    let log_inverse_tau = Var::new(&[(1.0 / tau).ln() as f32], model.device())?;
    let head_params = model.head_vars().all_vars();
    let mut tau_params = Vec::new();
    if config.learn_tau {
        tau_params.push(log_inverse_tau.clone());
    }
    let mut tau_opt = AdamW::new(
        tau_params,
        ParamsAdamW {
            lr: config.head_lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut head_opt = AdamW::new(
        head_params,
        ParamsAdamW {
            lr: config.head_lr,
            weight_decay: config.weight_decay,
            ..Default::default()
        },
    )?;

    let mut order: Vec<usize> = (0..posts.len()).collect();
    let mut losses = Vec::with_capacity(total_steps);
    let mut seen_posts = 0usize;
    let mut step = 0;
    while step < total_steps {
        match cap {
            Some(cap) => order = capped_epoch_order(&by_city, cap, &mut rng),
            None => order.shuffle(&mut rng),
        }
        for batch in order.chunks(batch_size) {
            if step >= total_steps {
                break;
            }
            let factor = lr_factor(step, total_steps, config.warmup_ratio);
            encoder_opt.set_learning_rate(config.lr * factor);
            head_opt.set_learning_rate(config.head_lr * factor);

            let step_cities = candidate_cities(
                cities.len(),
                batch.iter().map(|&i| posts[i].city),
                config,
                &mut rng,
            );
            let target_of: std::collections::HashMap<usize, u32> = step_cities
                .iter()
                .enumerate()
                .map(|(slot, &c)| (c, slot as u32))
                .collect();
            let targets: Vec<u32> = batch.iter().map(|&i| target_of[&posts[i].city]).collect();

            let texts: Vec<String> = batch
                .iter()
                .map(|&i| post_input.render(&posts[i].post))
                .collect();
            let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let encoded_posts = model.post_encoder().encode_texts(&text_refs, mode)?;
            let city_refs: Vec<&crate::geo::City> =
                step_cities.iter().map(|&c| &cities.cities()[c]).collect();
            let encoded_cities = model.encode_cities(&city_refs, mode)?;

            let device = model.device().clone();
            let target_tensor = Tensor::new(targets.as_slice(), &device)?;
            let tlc = tlc_loss_scaled(
                &encoded_posts.pooled,
                &encoded_cities.pooled,
                &target_tensor,
                &log_inverse_tau.as_tensor().exp()?,
            )?;
            let tau = 1.0 / log_inverse_tau.as_tensor().exp()?.to_vec1::<f32>()?[0] as f64;

            let tlm = if config.use_tlm {
                let sims = encoded_posts
                    .pooled
                    .matmul(&encoded_cities.pooled.t()?)?
                    .detach()
                    .to_vec2::<f32>()?;
                let positives: Vec<usize> = targets.iter().map(|&t| t as usize).collect();
                let negatives = sample_hard_negatives(
                    &sims,
                    &positives,
                    config.negatives,
                    tau,
                    config.negative_sampling,
                    &mut rng,
                );
                let (mut post_rows, mut city_rows, mut labels) =
                    (Vec::new(), Vec::new(), Vec::new());
                for (row, (&positive, negs)) in positives.iter().zip(&negatives).enumerate() {
                    for (city, label) in
                        std::iter::once((positive, 1f32)).chain(negs.iter().map(|&n| (n, 0f32)))
                    {
                        post_rows.push(row as u32);
                        city_rows.push(city as u32);
                        labels.push(label);
                    }
                }
                let logits = model.match_logits(
                    &encoded_posts,
                    &post_rows,
                    &encoded_cities,
                    &city_rows,
                    mode,
                )?;
                let labels = Tensor::new(labels.as_slice(), &device)?;
                Some(binary_cross_entropy_with_logits(&logits, &labels)?)
            } else {
                None
            };

            let loss = match (&tlm, config.use_tlc) {
                (Some(tlm), true) => (&tlc + (tlm * config.lambda_tlm)?)?,
                (Some(tlm), false) => (tlm * config.lambda_tlm)?,
                (None, _) => tlc.clone(),
            };
            let grads = loss.backward()?;
            encoder_opt.step(&grads)?;
            if tlm.is_some() {
                head_opt.step(&grads)?;
            }
            if config.learn_tau {
                tau_opt.step(&grads)?;
                let clamped = log_inverse_tau.as_tensor().clamp(0.0f32, 100f32.ln())?;
                log_inverse_tau.set(&clamped)?;
            }

            step += 1;
            seen_posts += batch.len();
            let loss_value = loss.to_scalar::<f32>()?;
            losses.push(loss_value);
            on_step(&StepReport {
                step,
                steps: total_steps,
                loss: loss_value,
                tlc: tlc.to_scalar::<f32>()?,
                tlm: tlm
                    .as_ref()
                    .map(|t| t.to_scalar::<f32>())
                    .transpose()?
                    .unwrap_or(0.0),
                posts_per_s: seen_posts as f64 / started.elapsed().as_secs_f64().max(1e-9),
            });
        }
    }

    let data_hash = training_data_hash(cities, posts);
    let tenth = (losses.len() / 10).max(1);
    let mean = |xs: &[f32]| xs.iter().sum::<f32>() / xs.len().max(1) as f32;
    let report = TrainReport {
        steps: step,
        seconds: started.elapsed().as_secs_f64(),
        first_loss: mean(&losses[..tenth]),
        last_loss: mean(&losses[losses.len() - tenth..]),
        posts_per_s: seen_posts as f64 / started.elapsed().as_secs_f64().max(1e-9),
        data_hash: data_hash.clone(),
    };
    let recorded = model.config_mut();
    recorded.head_trained |= config.use_tlm;
    recorded.tau = 1.0 / log_inverse_tau.as_tensor().exp()?.to_vec1::<f32>()?[0] as f64;
    recorded.training =
        Some(serde_json::json!({ "config": config, "report": report, "cities": cities.len() }));
    // The id names the weights: equal ids mean equal answers, whatever the seed or the clock.
    let digest = model.weights_digest()?;
    model.config_mut().model_id = format!("trained:{digest}");
    Ok(report)
}

/// Encoder variables the optimiser updates (all but, optionally, the word-embedding matrix).
fn trainable_encoder_vars(model: &GeoModel, freeze_word_embeddings: bool) -> Vec<Var> {
    let mut vars = Vec::new();
    for map in model.encoder_vars() {
        if let Ok(data) = map.data().lock() {
            vars.extend(
                data.iter()
                    .filter(|(name, _)| {
                        !(freeze_word_embeddings && name.ends_with("word_embeddings.weight"))
                    })
                    .map(|(_, var)| var.clone()),
            );
        }
    }
    vars
}

/// Post positions grouped by city, in city order.
fn posts_by_city(posts: &[CityPost]) -> Vec<Vec<usize>> {
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, post) in posts.iter().enumerate() {
        groups.entry(post.city).or_default().push(i);
    }
    groups.into_values().collect()
}

/// One epoch's post order with at most `cap` posts of each city: a fresh random subset of the big cities,
/// every post of the small ones, shuffled together.
fn capped_epoch_order(by_city: &[Vec<usize>], cap: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut order = Vec::new();
    for group in by_city {
        let mut group = group.clone();
        group.shuffle(rng);
        order.extend(group.into_iter().take(cap));
    }
    order.shuffle(rng);
    order
}

/// Table positions of the cities a step contrasts against: all of them when few, else the batch's cities
/// plus a random sample up to `max_cities_per_step`.
fn candidate_cities(
    total: usize,
    batch_cities: impl Iterator<Item = usize>,
    config: &TrainConfig,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    if total <= config.max_cities_per_step {
        return (0..total).collect();
    }
    let mut chosen: HashSet<usize> = batch_cities.collect();
    let mut rest: Vec<usize> = (0..total).filter(|c| !chosen.contains(c)).collect();
    rest.shuffle(rng);
    let room = config.max_cities_per_step.saturating_sub(chosen.len());
    chosen.extend(rest.into_iter().take(room));
    let mut chosen: Vec<usize> = chosen.into_iter().collect();
    chosen.sort_unstable();
    chosen
}

fn training_data_hash(cities: &CityTable, posts: &[CityPost]) -> String {
    let mut hasher = crc32fast::Hasher::new();
    for city in cities.cities() {
        hasher.update(&city.id.to_le_bytes());
    }
    for post in posts {
        hasher.update(post.post.id.as_deref().unwrap_or("").as_bytes());
        hasher.update(post.post.text.as_bytes());
        hasher.update(&(cities.cities()[post.city].id).to_le_bytes());
    }
    format!("{:08x}", hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rate_warms_up_then_decays_to_zero() {
        let f: Vec<f64> = (0..10).map(|s| lr_factor(s, 10, 0.2)).collect();
        assert_eq!(f[0], 0.5);
        assert_eq!(f[1], 1.0);
        assert!(f.windows(2).skip(1).all(|w| w[1] <= w[0]));
        assert!(f[9] > 0.0 && f[9] < 0.2);
    }

    #[test]
    fn capped_epochs_keep_small_cities_whole_and_redraw_big_ones() {
        // City 0 has 100 posts, city 1 has 3.
        let by_city = vec![(0..100).collect::<Vec<usize>>(), vec![100, 101, 102]];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let first = capped_epoch_order(&by_city, 10, &mut rng);
        let second = capped_epoch_order(&by_city, 10, &mut rng);
        for order in [&first, &second] {
            assert_eq!(order.len(), 13);
            assert_eq!(order.iter().filter(|&&i| i < 100).count(), 10);
            assert!([100, 101, 102].iter().all(|i| order.contains(i)));
            let distinct: HashSet<_> = order.iter().collect();
            assert_eq!(distinct.len(), 13);
        }
        let big = |o: &Vec<usize>| {
            o.iter()
                .filter(|&&i| i < 100)
                .copied()
                .collect::<HashSet<_>>()
        };
        assert_ne!(
            big(&first),
            big(&second),
            "each epoch draws the big city afresh"
        );
    }
}
