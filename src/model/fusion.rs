//! The tweet-location matching (TLM) head: a binary classifier on a fused post+city representation.
//!
//! Three fusion strategies, each followed by a small fusion encoder:
//! - [`Fusion::Sum`]: `t + l` through a two-layer MLP;
//! - [`Fusion::Concat`]: `[t, l, |t - l|, t * l]` through a two-layer MLP;
//! - [`Fusion::CrossAttention`]: the post's token states attend to the city prompt's token states (one
//!   multi-head attention layer with a residual and LayerNorm), are mean-pooled over the post's mask and
//!   joined with the city vector, then an MLP.
//!
//! `t` and `l` are the unit post and city vectors the contrastive (TLC) objective uses.

use candle_core::{Module, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::bert::{Dense, ForwardMode, TrainableLayerNorm};
use super::encoder::EncodedTexts;
use super::pooling::Pooling;

/// How a post and a city are fused before the matching head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fusion {
    /// Sum of the pooled vectors.
    Sum,
    /// Concatenation of the pooled vectors, their absolute difference and product.
    #[default]
    Concat,
    /// Post tokens attend to the city prompt's tokens.
    CrossAttention,
}

impl Fusion {
    /// Whether the head needs token states (not only pooled vectors).
    pub fn needs_tokens(self) -> bool {
        self == Fusion::CrossAttention
    }
}

/// One side of a batch of (post, city) pairs: rows of an encoding selected by index.
pub struct PairSide<'a> {
    /// The encoded texts.
    pub encoded: &'a EncodedTexts,
    /// `[N]` u32 row of `encoded` for each pair.
    pub rows: &'a Tensor,
}

impl PairSide<'_> {
    fn pooled(&self) -> candle_core::Result<Tensor> {
        self.encoded.pooled.index_select(self.rows, 0)
    }
}

struct CrossAttention {
    query: Dense,
    key: Dense,
    value: Dense,
    output: Dense,
    norm: TrainableLayerNorm,
    heads: usize,
}

impl CrossAttention {
    fn new(hidden: usize, heads: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            query: Dense::new(hidden, hidden, vb.pp("query"))?,
            key: Dense::new(hidden, hidden, vb.pp("key"))?,
            value: Dense::new(hidden, hidden, vb.pp("value"))?,
            output: Dense::new(hidden, hidden, vb.pp("output"))?,
            norm: TrainableLayerNorm::new(hidden, 1e-12, vb.pp("norm"))?,
            heads,
        })
    }

    /// `posts` `[N, T, H]` attend to `cities` `[N, S, H]` (padding masked by `city_mask` `[N, S]`).
    fn forward(
        &self,
        posts: &Tensor,
        cities: &Tensor,
        city_mask: &Tensor,
        mode: ForwardMode,
    ) -> candle_core::Result<Tensor> {
        let (n, t, h) = posts.dims3()?;
        let s = cities.dim(1)?;
        let d = h / self.heads;
        let split = |x: Tensor, len: usize| -> candle_core::Result<Tensor> {
            x.reshape((n, len, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(posts)?, t)?;
        let k = split(self.key.forward(cities)?, s)?;
        let v = split(self.value.forward(cities)?, s)?;
        let bias = ((city_mask.to_dtype(posts.dtype())? - 1.0)? * 1e9)?.reshape((n, 1, 1, s))?;
        let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(&bias)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((n, t, h))?;
        self.norm
            .forward(&(self.output.forward(&context)? + posts)?, mode)
    }
}

/// The TLM head for one fusion strategy.
pub struct TlmHead {
    fusion: Fusion,
    cross: Option<CrossAttention>,
    hidden_layer: Dense,
    logit_layer: Dense,
    hidden_width: usize,
}

impl TlmHead {
    /// Creates (or loads, when `vb`'s map already holds them) the head's weights for `hidden`-wide vectors.
    pub fn new(fusion: Fusion, hidden: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let (cross, input_width) = match fusion {
            Fusion::Sum => (None, hidden),
            Fusion::Concat => (None, 4 * hidden),
            Fusion::CrossAttention => (
                Some(CrossAttention::new(hidden, 6, vb.pp("cross"))?),
                3 * hidden,
            ),
        };
        Ok(Self {
            fusion,
            cross,
            hidden_layer: Dense::new(input_width, hidden, vb.pp("fuse"))?,
            logit_layer: Dense::new(hidden, 1, vb.pp("logit"))?,
            hidden_width: hidden,
        })
    }

    /// The fusion strategy.
    pub fn fusion(&self) -> Fusion {
        self.fusion
    }

    /// Matching logits `[N]` for N (post, city) pairs.
    pub fn forward(
        &self,
        post: &PairSide,
        city: &PairSide,
        mode: ForwardMode,
    ) -> candle_core::Result<Tensor> {
        // Unit vectors have per-dimension values around 1/sqrt(H); rescaled to unit variance, the fusion MLP
        // starts in the range its initialisation expects instead of needing weights ~sqrt(H) times larger
        // (without this, TLM stayed at its prior loss for the whole few-shot run).
        let scale = (self.hidden_width as f64).sqrt();
        let t = (post.pooled()? * scale)?;
        let l = (city.pooled()? * scale)?;
        let fused = match (&self.cross, self.fusion) {
            (_, Fusion::Sum) => (&t + &l)?,
            (_, Fusion::Concat) => Tensor::cat(&[&t, &l, &(&t - &l)?.abs()?, &(&t * &l)?], 1)?,
            (Some(cross), Fusion::CrossAttention) => {
                let post_tokens = post.encoded.hidden.index_select(post.rows, 0)?;
                let post_mask = post.encoded.mask.index_select(post.rows, 0)?;
                let city_tokens = city.encoded.hidden.index_select(city.rows, 0)?;
                let city_mask = city.encoded.mask.index_select(city.rows, 0)?;
                let attended = cross.forward(&post_tokens, &city_tokens, &city_mask, mode)?;
                let pooled = Pooling::Mean.pool(&attended, &post_mask)?;
                Tensor::cat(&[&pooled, &l, &(&pooled * &l)?], 1)?
            }
            (None, Fusion::CrossAttention) => {
                candle_core::bail!("cross-attention head built without its layer")
            }
        };
        let hidden = self.hidden_layer.forward(&fused)?.gelu_erf()?;
        self.logit_layer.forward(&hidden)?.squeeze(1)
    }
}

/// Numerically stable binary cross-entropy on logits, averaged: `mean(softplus(z) - y z)`.
pub fn binary_cross_entropy_with_logits(
    logits: &Tensor,
    labels: &Tensor,
) -> candle_core::Result<Tensor> {
    // softplus(z) = max(z, 0) + ln(1 + e^{-|z|})
    let softplus = (logits.relu()? + ((logits.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    (softplus - (labels * logits)?)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bce_matches_hand_computed_values() {
        let z = Tensor::new(&[0.0f32, 2.0, -3.0, 40.0], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1.0f32, 0.0, 0.0, 1.0], &Device::Cpu).unwrap();
        // ln 2, ln(1+e^2), ln(1+e^-3), ~0
        let expected =
            ((2f64).ln() + (1.0 + 2f64.exp()).ln() + (1.0 + (-3f64).exp()).ln() + 0.0) / 4.0;
        let got = binary_cross_entropy_with_logits(&z, &y)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    }

    #[test]
    fn every_fusion_yields_one_logit_per_pair_and_trains() {
        let device = Device::Cpu;
        let (hidden, posts, cities) = (12, 3, 4);
        let encoded = |n: usize, t: usize| EncodedTexts {
            pooled: Tensor::randn(0f32, 1.0, (n, hidden), &device).unwrap(),
            hidden: Tensor::randn(0f32, 1.0, (n, t, hidden), &device).unwrap(),
            mask: Tensor::ones((n, t), candle_core::DType::U32, &device).unwrap(),
        };
        let (p, c) = (encoded(posts, 5), encoded(cities, 3));
        let post_rows = Tensor::new(&[0u32, 0, 1, 2], &device).unwrap();
        let city_rows = Tensor::new(&[0u32, 3, 1, 2], &device).unwrap();
        for fusion in [Fusion::Sum, Fusion::Concat, Fusion::CrossAttention] {
            let vars = candle_nn::VarMap::new();
            let vb = VarBuilder::from_varmap(&vars, candle_core::DType::F32, &device);
            let head = TlmHead::new(fusion, hidden, vb).unwrap();
            let logits = head
                .forward(
                    &PairSide {
                        encoded: &p,
                        rows: &post_rows,
                    },
                    &PairSide {
                        encoded: &c,
                        rows: &city_rows,
                    },
                    ForwardMode::Train { dropout_scale: 0.0 },
                )
                .unwrap();
            assert_eq!(logits.dims(), &[4]);
            let labels = Tensor::new(&[1f32, 0.0, 1.0, 1.0], &device).unwrap();
            let loss = binary_cross_entropy_with_logits(&logits, &labels).unwrap();
            let grads = loss.backward().unwrap();
            for var in vars.all_vars() {
                assert!(
                    grads.get(var.as_tensor()).is_some(),
                    "{fusion:?}: a head weight got no gradient"
                );
            }
        }
    }
}
