//! A trainable BERT encoder built on candle-nn.
//!
//! Why not `candle_transformers::models::bert::BertModel`? Its LayerNorm calls a fused kernel that has no
//! backward pass, so gradients silently stop at the first LayerNorm and only a head on top would train.
//! This module writes the same architecture with two execution modes:
//! - [`ForwardMode::Train`]: every op is differentiable (a LayerNorm made of primitive ops, a softmax made of
//!   `exp`/`sum`/`div`), dropout on;
//! - [`ForwardMode::Inference`]: the fused candle kernels (LayerNorm, last-dim softmax), dropout off.
//!
//! Both modes compute the same function up to float rounding (a unit test checks it). Weights are
//! created through a [`VarBuilder`] backed by a [`candle_nn::VarMap`], so an optimiser can update them.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Init, VarBuilder};

use super::config::{BertConfig, HiddenAct};

/// How a forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ForwardMode {
    /// Differentiable ops everywhere, dropout with the checkpoint's probabilities scaled by this factor
    /// (0.0 turns dropout off while keeping the graph differentiable).
    Train {
        /// Multiplier on the config's dropout probabilities.
        dropout_scale: f32,
    },
    /// Fused kernels, no dropout, for embedding and serving.
    Inference,
}

impl ForwardMode {
    fn dropout(self, xs: &Tensor, p: f64) -> candle_core::Result<Tensor> {
        match self {
            ForwardMode::Train { dropout_scale } if dropout_scale > 0.0 && p > 0.0 => {
                candle_nn::ops::dropout(xs, p as f32 * dropout_scale)
            }
            _ => Ok(xs.clone()),
        }
    }
}

/// Layer normalisation over the last dimension, with a differentiable path for training.
#[derive(Debug, Clone)]
pub struct TrainableLayerNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) eps: f64,
}

impl TrainableLayerNorm {
    /// Loads `weight` and `bias` (initialised to 1 and 0 when absent from a fresh VarMap).
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints(size, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(size, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    /// Normalises `xs` over its last dimension.
    pub fn forward(&self, xs: &Tensor, mode: ForwardMode) -> candle_core::Result<Tensor> {
        match mode {
            ForwardMode::Inference => candle_nn::ops::layer_norm(
                &xs.contiguous()?,
                &self.weight,
                &self.bias,
                self.eps as f32,
            ),
            ForwardMode::Train { .. } => {
                let mean = xs.mean_keepdim(D::Minus1)?;
                let centered = xs.broadcast_sub(&mean)?;
                let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = centered.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
                normed
                    .broadcast_mul(&self.weight)?
                    .broadcast_add(&self.bias)
            }
        }
    }
}

/// A dense layer `x W^T + b` that flattens leading dimensions into one matrix product.
#[derive(Debug, Clone)]
pub struct Dense {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
}

impl Dense {
    /// Loads a `[out, in]` weight and an `[out]` bias under `vb`.
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let weight = vb.get_with_hints(
            (out_dim, in_dim),
            "weight",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let bias = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias })
    }
}

impl Module for Dense {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        // One [N, in] x [in, out] product is much faster on CPU than a broadcast batched matmul.
        let dims = xs.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let flat = xs.reshape((rows, in_dim))?;
        let out = flat.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?;
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = self.bias.dim(0)?;
        out.reshape(out_dims)
    }
}

pub(crate) struct Embeddings {
    pub(crate) word: candle_nn::Embedding,
    pub(crate) position: candle_nn::Embedding,
    pub(crate) token_type: candle_nn::Embedding,
    pub(crate) layer_norm: TrainableLayerNorm,
    dropout: f64,
}

impl Embeddings {
    fn new(config: &BertConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let hidden = config.hidden_size;
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let table = |n: usize, name: &str| -> candle_core::Result<candle_nn::Embedding> {
            let weight = vb.pp(name).get_with_hints((n, hidden), "weight", init)?;
            Ok(candle_nn::Embedding::new(weight, hidden))
        };
        Ok(Self {
            word: table(config.vocab_size, "word_embeddings")?,
            position: table(config.max_position_embeddings, "position_embeddings")?,
            token_type: table(config.type_vocab_size, "token_type_embeddings")?,
            layer_norm: TrainableLayerNorm::new(hidden, config.layer_norm_eps, vb.pp("LayerNorm"))?,
            dropout: config.hidden_dropout_prob,
        })
    }

    fn forward(
        &self,
        input_ids: &Tensor,
        type_ids: &Tensor,
        mode: ForwardMode,
    ) -> candle_core::Result<Tensor> {
        let (_batch, seq_len) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, seq_len as u32, input_ids.device())?;
        let summed = self
            .word
            .forward(input_ids)?
            .add(&self.token_type.forward(type_ids)?)?
            .broadcast_add(&self.position.forward(&positions)?)?;
        let normed = self.layer_norm.forward(&summed, mode)?;
        mode.dropout(&normed, self.dropout)
    }
}

pub(crate) struct SelfAttention {
    pub(crate) query: Dense,
    pub(crate) key: Dense,
    pub(crate) value: Dense,
    pub(crate) output: Dense,
    pub(crate) output_norm: TrainableLayerNorm,
    heads: usize,
    head_size: usize,
    attention_dropout: f64,
    hidden_dropout: f64,
}

impl SelfAttention {
    fn new(config: &BertConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let hidden = config.hidden_size;
        let own = vb.pp("self");
        let out = vb.pp("output");
        Ok(Self {
            query: Dense::new(hidden, hidden, own.pp("query"))?,
            key: Dense::new(hidden, hidden, own.pp("key"))?,
            value: Dense::new(hidden, hidden, own.pp("value"))?,
            output: Dense::new(hidden, hidden, out.pp("dense"))?,
            output_norm: TrainableLayerNorm::new(
                hidden,
                config.layer_norm_eps,
                out.pp("LayerNorm"),
            )?,
            heads: config.num_attention_heads,
            head_size: config.head_size(),
            attention_dropout: config.attention_probs_dropout_prob,
            hidden_dropout: config.hidden_dropout_prob,
        })
    }

    /// `[B, T, H]` -> `[B, heads, T, head_size]`.
    fn split_heads(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, seq_len, _) = xs.dims3()?;
        xs.reshape((batch, seq_len, self.heads, self.head_size))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(
        &self,
        hidden: &Tensor,
        mask_bias: &Tensor,
        mode: ForwardMode,
    ) -> candle_core::Result<Tensor> {
        let (batch, seq_len, width) = hidden.dims3()?;
        let query = self.split_heads(&self.query.forward(hidden)?)?;
        let key = self.split_heads(&self.key.forward(hidden)?)?;
        let value = self.split_heads(&self.value.forward(hidden)?)?;
        let scale = 1.0 / (self.head_size as f64).sqrt();
        let scores = (query.matmul(&key.t()?)? * scale)?.broadcast_add(mask_bias)?;
        let probs = match mode {
            ForwardMode::Inference => candle_nn::ops::softmax_last_dim(&scores)?,
            ForwardMode::Train { .. } => candle_nn::ops::softmax(&scores, D::Minus1)?,
        };
        let probs = mode.dropout(&probs, self.attention_dropout)?;
        let context = probs
            .matmul(&value)?
            .transpose(1, 2)?
            .reshape((batch, seq_len, width))?;
        let projected = mode.dropout(&self.output.forward(&context)?, self.hidden_dropout)?;
        self.output_norm.forward(&(projected + hidden)?, mode)
    }
}

pub(crate) struct Layer {
    pub(crate) attention: SelfAttention,
    pub(crate) intermediate: Dense,
    pub(crate) output: Dense,
    pub(crate) output_norm: TrainableLayerNorm,
    pub(crate) activation: HiddenAct,
    hidden_dropout: f64,
}

impl Layer {
    fn new(config: &BertConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let hidden = config.hidden_size;
        Ok(Self {
            attention: SelfAttention::new(config, vb.pp("attention"))?,
            intermediate: Dense::new(
                hidden,
                config.intermediate_size,
                vb.pp("intermediate").pp("dense"),
            )?,
            output: Dense::new(
                config.intermediate_size,
                hidden,
                vb.pp("output").pp("dense"),
            )?,
            output_norm: TrainableLayerNorm::new(
                hidden,
                config.layer_norm_eps,
                vb.pp("output").pp("LayerNorm"),
            )?,
            activation: config.hidden_act,
            hidden_dropout: config.hidden_dropout_prob,
        })
    }

    fn forward(
        &self,
        hidden: &Tensor,
        mask_bias: &Tensor,
        mode: ForwardMode,
    ) -> candle_core::Result<Tensor> {
        let attended = self.attention.forward(hidden, mask_bias, mode)?;
        let expanded = self.intermediate.forward(&attended)?;
        let activated = match self.activation {
            HiddenAct::Gelu => expanded.gelu_erf()?,
            HiddenAct::GeluApproximate => expanded.gelu()?,
            HiddenAct::Relu => expanded.relu()?,
        };
        let projected = mode.dropout(&self.output.forward(&activated)?, self.hidden_dropout)?;
        self.output_norm.forward(&(projected + attended)?, mode)
    }
}

/// The BERT encoder stack: embeddings and transformer layers, producing one hidden state per token.
pub struct BertEncoder {
    pub(crate) embeddings: Embeddings,
    pub(crate) layers: Vec<Layer>,
    config: BertConfig,
}

impl BertEncoder {
    /// Builds the encoder under `vb` with the Hugging Face weight names (`embeddings.*`, `encoder.layer.N.*`).
    pub fn new(config: &BertConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let embeddings = Embeddings::new(config, vb.pp("embeddings"))?;
        let layers = (0..config.num_hidden_layers)
            .map(|index| Layer::new(config, vb.pp(format!("encoder.layer.{index}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layers,
            config: config.clone(),
        })
    }

    /// The names of every weight [`BertEncoder::new`] asks its `VarBuilder` for (Hugging Face names,
    /// without a checkpoint prefix). A loader can put these in a `VarMap` first, so that building the
    /// encoder does not draw random initial values only to overwrite them.
    pub fn parameter_names(config: &BertConfig) -> Vec<String> {
        let mut names: Vec<String> = [
            "word_embeddings.weight",
            "position_embeddings.weight",
            "token_type_embeddings.weight",
            "LayerNorm.weight",
            "LayerNorm.bias",
        ]
        .iter()
        .map(|n| format!("embeddings.{n}"))
        .collect();
        for index in 0..config.num_hidden_layers {
            for module in [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "attention.output.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ] {
                for tensor in ["weight", "bias"] {
                    names.push(format!("encoder.layer.{index}.{module}.{tensor}"));
                }
            }
        }
        names
    }

    /// The architecture this encoder was built with.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Token hidden states `[B, T, H]` for `input_ids` `[B, T]` (u32) and `attention_mask` `[B, T]`
    /// (1 for real tokens, 0 for padding).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        mode: ForwardMode,
    ) -> candle_core::Result<Tensor> {
        let type_ids = input_ids.zeros_like()?;
        let mut hidden = self.embeddings.forward(input_ids, &type_ids, mode)?;
        let mask_bias = attention_mask_bias(attention_mask, hidden.dtype())?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &mask_bias, mode)?;
        }
        Ok(hidden)
    }
}

/// `[B, T]` 0/1 mask -> `[B, 1, 1, T]` additive bias: 0 for real tokens, a large negative for padding
/// (-1e9 in f32; -1e4 in half precision, whose range ends at 65,504 and where 0 x inf would be NaN).
fn attention_mask_bias(attention_mask: &Tensor, dtype: DType) -> candle_core::Result<Tensor> {
    let (batch, seq_len) = attention_mask.dims2()?;
    let big = match dtype {
        DType::F16 | DType::BF16 => 1e4,
        _ => 1e9,
    };
    let mask = attention_mask.to_dtype(DType::F32)?;
    let bias = ((mask - 1.0)? * big)?.to_dtype(dtype)?;
    bias.reshape((batch, 1, 1, seq_len))
}

/// Builds a fresh variable map on `device` (used by tests and the loader).
pub fn new_var_builder(varmap: &candle_nn::VarMap, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_varmap(varmap, DType::F32, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::HiddenAct;

    #[test]
    fn parameter_names_are_exactly_the_weights_the_encoder_creates() {
        let config = BertConfig {
            vocab_size: 10,
            hidden_size: 8,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 16,
            hidden_act: HiddenAct::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 12,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            model_type: None,
        };
        let vars = candle_nn::VarMap::new();
        BertEncoder::new(&config, new_var_builder(&vars, &Device::Cpu)).unwrap();
        let mut created: Vec<String> = vars.data().lock().unwrap().keys().cloned().collect();
        created.sort();
        let mut listed = BertEncoder::parameter_names(&config);
        listed.sort();
        assert_eq!(created, listed);
    }
}
