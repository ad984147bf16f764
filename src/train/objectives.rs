//! The two ContrastGeo objectives and the online hard-negative miner.
//!
//! - TLC (tweet-location contrastive): cross-entropy over `cos(post, city) / tau` for all candidate cities,
//!   the true city being the positive.
//! - TLM (tweet-location matching): binary cross-entropy of the fused head on each positive pair and `k` hard
//!   negatives per post, drawn from the softmax of the post's TLC similarities with the true city masked out.

use candle_core::Tensor;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// TLC loss: mean cross-entropy of `posts [B, H] . cities [C, H]^T / tau` against `targets [B]` (u32).
pub fn tlc_loss(
    posts: &Tensor,
    cities: &Tensor,
    targets: &Tensor,
    tau: f64,
) -> candle_core::Result<Tensor> {
    let inverse_tau = Tensor::new(&[(1.0 / tau) as f32], posts.device())?;
    tlc_loss_scaled(posts, cities, targets, &inverse_tau)
}

/// TLC loss with the inverse temperature as a `[1]` tensor, so that it can be a trained variable.
pub fn tlc_loss_scaled(
    posts: &Tensor,
    cities: &Tensor,
    targets: &Tensor,
    inverse_tau: &Tensor,
) -> candle_core::Result<Tensor> {
    let logits = posts.matmul(&cities.t()?)?.broadcast_mul(inverse_tau)?;
    candle_nn::loss::cross_entropy(&logits, targets)
}

/// How hard negatives are chosen from a post's similarities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NegativeSampling {
    /// Draw without replacement from softmax(similarity / tau): hard, but not always the same ones.
    #[default]
    Softmax,
    /// The k most similar wrong cities.
    TopK,
}

/// For each post (a row of `similarities` over candidate cities), up to `k` distinct negative city indices,
/// never the post's positive. Fewer when there are fewer than `k + 1` candidates.
pub fn sample_hard_negatives(
    similarities: &[Vec<f32>],
    positives: &[usize],
    k: usize,
    tau: f64,
    strategy: NegativeSampling,
    rng: &mut impl Rng,
) -> Vec<Vec<usize>> {
    similarities
        .iter()
        .zip(positives)
        .map(|(row, &positive)| {
            let mut candidates: Vec<usize> = (0..row.len()).filter(|&c| c != positive).collect();
            match strategy {
                NegativeSampling::TopK => {
                    candidates.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                    candidates.truncate(k);
                    candidates
                }
                NegativeSampling::Softmax => {
                    let top = candidates
                        .iter()
                        .map(|&c| row[c])
                        .fold(f32::NEG_INFINITY, f32::max);
                    // Shifted by the maximum, so the largest weight is 1 and the sum never underflows to 0.
                    let mut weights: Vec<f64> = candidates
                        .iter()
                        .map(|&c| (((row[c] - top) as f64) / tau).exp())
                        .collect();
                    let mut taken = vec![false; candidates.len()];
                    let mut picked = Vec::with_capacity(k.min(candidates.len()));
                    while picked.len() < k.min(candidates.len()) {
                        let total: f64 = weights.iter().sum();
                        let mut r = rng.random::<f64>() * total;
                        let choice = weights
                            .iter()
                            .position(|&w| {
                                r -= w;
                                w > 0.0 && r <= 0.0
                            })
                            // Rounding (or weights underflowed to 0): the first candidate not yet taken.
                            .or_else(|| taken.iter().position(|&t| !t))
                            .unwrap_or(0);
                        picked.push(candidates[choice]);
                        taken[choice] = true;
                        weights[choice] = 0.0;
                    }
                    picked
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    #[test]
    fn tlc_loss_matches_a_hand_computed_value() {
        let d = Device::Cpu;
        let posts = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &d).unwrap();
        let cities = Tensor::new(&[[1f32, 0.0], [0.6, 0.8]], &d).unwrap();
        let targets = Tensor::new(&[0u32, 1], &d).unwrap();
        let tau = 0.5;
        // Post 0 logits: [2, 1.2] target 0; post 1 logits: [0, 1.6] target 1.
        let ce = |logits: [f64; 2], t: usize| -> f64 {
            let lse = logits.iter().map(|x| x.exp()).sum::<f64>().ln();
            lse - logits[t]
        };
        let expected = (ce([2.0, 1.2], 0) + ce([0.0, 1.6], 1)) / 2.0;
        let got = tlc_loss(&posts, &cities, &targets, tau)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    }

    #[test]
    fn hard_negatives_never_include_the_positive_and_are_distinct() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let sims: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                (0..8)
                    .map(|c| ((i * 7 + c * 13) % 17) as f32 / 17.0)
                    .collect()
            })
            .collect();
        let positives: Vec<usize> = (0..50).map(|i| i % 8).collect();
        for strategy in [NegativeSampling::Softmax, NegativeSampling::TopK] {
            for k in [1, 6, 7, 20] {
                let negatives =
                    sample_hard_negatives(&sims, &positives, k, 0.03, strategy, &mut rng);
                for (negs, &pos) in negatives.iter().zip(&positives) {
                    assert_eq!(negs.len(), k.min(7));
                    assert!(!negs.contains(&pos), "{strategy:?} returned the positive");
                    let mut unique = negs.clone();
                    unique.sort();
                    unique.dedup();
                    assert_eq!(unique.len(), negs.len(), "{strategy:?} repeated a negative");
                }
            }
        }
    }

    #[test]
    fn top_k_takes_the_most_similar_wrong_cities_and_softmax_prefers_them() {
        let row = vec![0.9f32, 0.1, 0.8, 0.95, 0.2];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let top = sample_hard_negatives(
            std::slice::from_ref(&row),
            &[3],
            2,
            0.03,
            NegativeSampling::TopK,
            &mut rng,
        );
        assert_eq!(top[0], vec![0, 2]);
        let mut hits = 0;
        for _ in 0..200 {
            let drawn = sample_hard_negatives(
                std::slice::from_ref(&row),
                &[3],
                1,
                0.03,
                NegativeSampling::Softmax,
                &mut rng,
            );
            hits += (drawn[0][0] == 0) as usize;
        }
        assert!(
            hits > 150,
            "the hardest negative should dominate at tau 0.03: {hits}/200"
        );
    }
}
