//! The text encoder: tokenizer + trainable BERT + pooling + L2 normalisation.
//!
//! One type serves both sides of ContrastGeo (posts and location prompts). Weights live in a `VarMap`, so the
//! same encoder is trained in place and then used for inference.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::bert::{BertEncoder, ForwardMode};
use super::config::BertConfig;
use super::cpu_forward;
use super::error::{ModelError, Result};
use super::files::ModelFiles;
use super::pooling::{l2_normalize, to_rows, Pooling};
use super::tokenize::{length_buckets, PostTokenizer, TokenBatch};

/// Calls of [`TextEncoder::embed`] with at least this many tokens make transposed copies of the dense
/// weights first (see [`cpu_forward::CpuWeights`]): measured here, the copies (about 15 ms) pay for
/// themselves from a few hundred posts on.
const TRANSPOSE_MIN_TOKENS: usize = 2048;

/// Settings of a text encoder that are not part of the checkpoint's architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EncoderSettings {
    /// Longest token sequence, special tokens included; longer texts are truncated.
    pub max_length: usize,
    /// Pooling of token states.
    pub pooling: Pooling,
    /// Most texts per forward pass when embedding many.
    pub batch_size: usize,
    /// Most padded tokens (texts x longest text) per forward pass.
    pub max_batch_tokens: usize,
    /// Precision of bulk inference ([`TextEncoder::embed`]) on a GPU; the CPU always runs f32, and
    /// training and the weights stay f32 everywhere.
    pub dtype: InferenceDType,
}

impl Default for EncoderSettings {
    fn default() -> Self {
        let cpu = InferenceOptions::for_device(&Device::Cpu);
        Self {
            max_length: 128,
            pooling: Pooling::Mean,
            batch_size: cpu.batch_size,
            max_batch_tokens: cpu.max_batch_tokens,
            dtype: cpu.dtype,
        }
    }
}

impl EncoderSettings {
    /// The default settings with the batching chosen for `device`.
    pub fn for_device(device: &Device) -> Self {
        let mut settings = Self::default();
        settings.apply(&InferenceOptions::for_device(device));
        settings
    }

    /// Replaces the batching and precision (the choices that do not change the function computed).
    pub fn apply(&mut self, options: &InferenceOptions) {
        self.batch_size = options.batch_size;
        self.max_batch_tokens = options.max_batch_tokens;
        self.dtype = options.dtype;
    }
}

/// Precision of bulk inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InferenceDType {
    /// 32-bit floats: the weights as trained; the only choice on the CPU.
    #[default]
    F32,
    /// IEEE half precision (CUDA).
    F16,
    /// bfloat16 (CUDA).
    Bf16,
}

impl InferenceDType {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            InferenceDType::F32 => DType::F32,
            InferenceDType::F16 => DType::F16,
            InferenceDType::Bf16 => DType::BF16,
        }
    }
}

/// How bulk inference batches texts and at what precision: per device, since a GPU wants far larger
/// batches than a CPU core's caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceOptions {
    /// Most texts per forward pass.
    pub batch_size: usize,
    /// Most padded tokens per forward pass.
    pub max_batch_tokens: usize,
    /// Precision of the forward pass.
    pub dtype: InferenceDType,
}

impl InferenceOptions {
    /// Defaults measured per device: the CPU 32 posts / 4,096 tokens (f32); a CUDA GPU 256 posts /
    /// 32,768 tokens (measured on an H200), f32 unless asked otherwise.
    pub fn for_device(device: &Device) -> Self {
        if device.is_cpu() {
            Self {
                batch_size: 32,
                max_batch_tokens: 4096,
                dtype: InferenceDType::F32,
            }
        } else {
            Self {
                batch_size: 256,
                max_batch_tokens: 32_768,
                dtype: InferenceDType::F32,
            }
        }
    }
}

/// The encoder's output for a batch of texts.
#[derive(Debug, Clone)]
pub struct EncodedTexts {
    /// `[B, H]` pooled, unit-length embeddings.
    pub pooled: Tensor,
    /// `[B, T, H]` token states.
    pub hidden: Tensor,
    /// `[B, T]` u32 attention mask (1 on real tokens).
    pub mask: Tensor,
}

/// A BERT-family sentence encoder producing unit-length embeddings.
pub struct TextEncoder {
    tokenizer: PostTokenizer,
    /// Built on the `VarMap`'s variables: every op is recorded for backprop.
    bert: BertEncoder,
    /// The same weights (shared storage, so optimiser updates show here too) without variable tracking.
    /// Inference through the tracked copy would keep every intermediate tensor of the forward pass alive
    /// for a backward pass that never comes: 3x the memory and a slower, cache-hostile pass.
    bert_untracked: BertEncoder,
    vars: VarMap,
    /// The prefix of the weight names in the checkpoint ("", "bert.", ...).
    weight_prefix: String,
    settings: EncoderSettings,
    device: Device,
    /// Embeddings by text, once [`TextEncoder::freeze_with_cache`] switched it on (an evaluation that asks
    /// for the same posts several times with weights that never change).
    cache: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, Vec<f32>>>>,
}

impl TextEncoder {
    /// Loads a Hugging Face checkpoint (`config.json`, `model.safetensors`, `tokenizer.json`) onto `device`.
    pub fn load(files: &ModelFiles, settings: EncoderSettings, device: &Device) -> Result<Self> {
        let config = read_config(&files.config)?;
        Self::load_with_weights(&config, &files.tokenizer, &files.weights, settings, device)
    }

    /// Builds the encoder for `config` and fills it from `weights` (a base model or a trained checkpoint).
    pub fn load_with_weights(
        config: &BertConfig,
        tokenizer: &Path,
        weights: &Path,
        settings: EncoderSettings,
        device: &Device,
    ) -> Result<Self> {
        if settings.max_length > config.max_position_embeddings {
            return Err(ModelError::InvalidSetting(format!(
                "max_length {} exceeds the model's {} positions",
                settings.max_length, config.max_position_embeddings
            )));
        }
        let tokenizer = PostTokenizer::from_file(tokenizer, settings.max_length)?;
        let vars = VarMap::new();
        let (bert, bert_untracked, weight_prefix) = build_bert(config, &vars, weights, device)?;
        Ok(Self {
            tokenizer,
            bert,
            bert_untracked,
            vars,
            weight_prefix,
            settings,
            device: device.clone(),
            cache: std::sync::OnceLock::new(),
        })
    }

    /// Remembers every embedding [`TextEncoder::embed`] makes from now on and answers a text it has seen
    /// from memory. Only for an encoder whose weights no longer change (training would make the memory
    /// stale): the evaluation of a frozen base model, which embeds the same test posts for every rule.
    pub fn freeze_with_cache(&self) {
        self.cache.get_or_init(Default::default);
    }

    /// Width of the embeddings.
    pub fn hidden_size(&self) -> usize {
        self.bert.config().hidden_size
    }

    /// The architecture of the underlying BERT.
    pub fn config(&self) -> &BertConfig {
        self.bert.config()
    }

    /// The settings this encoder runs with.
    pub fn settings(&self) -> &EncoderSettings {
        &self.settings
    }

    /// Changes the batching and precision of bulk inference (see [`InferenceOptions`]).
    pub fn set_inference_options(&mut self, options: &InferenceOptions) {
        self.settings.apply(options);
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &PostTokenizer {
        &self.tokenizer
    }

    /// The trainable weights (names as in the Hugging Face checkpoint).
    pub fn vars(&self) -> &VarMap {
        &self.vars
    }

    /// Pooled, L2-normalised embeddings `[B, H]` of a padded batch.
    pub fn embed_batch(&self, batch: &TokenBatch, mode: ForwardMode) -> Result<Tensor> {
        Ok(self.encode_batch(batch, mode)?.pooled)
    }

    /// Token states and pooled embeddings of a padded batch.
    pub fn encode_batch(&self, batch: &TokenBatch, mode: ForwardMode) -> Result<EncodedTexts> {
        let bert = match mode {
            ForwardMode::Train { .. } => &self.bert,
            ForwardMode::Inference => &self.bert_untracked,
        };
        let hidden = bert.forward(&batch.input_ids, &batch.attention_mask, mode)?;
        let pooled = l2_normalize(&self.settings.pooling.pool(&hidden, &batch.attention_mask)?)?;
        Ok(EncodedTexts {
            pooled,
            hidden,
            mask: batch.attention_mask.clone(),
        })
    }

    /// Token states and pooled embeddings of `texts` as one batch, in order.
    pub fn encode_texts(&self, texts: &[&str], mode: ForwardMode) -> Result<EncodedTexts> {
        let ids = self.tokenizer.tokenize(texts)?;
        let refs: Vec<&[u32]> = ids.iter().map(|s| s.as_slice()).collect();
        let batch = self.tokenizer.batch(&refs, &self.device)?;
        self.encode_batch(&batch, mode)
    }

    /// Embeddings `[N, H]` of `texts` as one batch, in order: the differentiable path used in training.
    pub fn embed_texts(&self, texts: &[&str], mode: ForwardMode) -> Result<Tensor> {
        Ok(self.encode_texts(texts, mode)?.pooled)
    }

    /// Unit-length embeddings of `texts` for inference, in input order. Texts are bucketed by length into
    /// batches of `batch_size` (and at most `max_batch_tokens` padded tokens). On the CPU the batches run
    /// through [`super::cpu_forward`] (no padding, one batch per core); on other devices through the candle
    /// path of [`TextEncoder::embed_reference`].
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let Some(cache) = self.cache.get() else {
            return self.embed_uncached(texts);
        };
        let known = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let missing: Vec<&str> = texts
            .iter()
            .copied()
            .filter(|t| !known.contains_key(*t))
            .collect();
        drop(known);
        let fresh = self.embed_uncached(&missing)?;
        let mut known = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (text, vector) in missing.into_iter().zip(fresh) {
            known.insert(text.to_owned(), vector);
        }
        Ok(texts.iter().map(|t| known[*t].clone()).collect())
    }

    fn embed_uncached(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        if !self.device.is_cpu() {
            return self.embed_reference(texts);
        }
        let ids = self.tokenizer.tokenize(texts)?;
        let buckets = self.buckets(&ids);
        let pooling = self.settings.pooling;
        let threads = rayon::current_num_threads();
        let tokens: usize = ids.iter().map(Vec::len).sum();
        let weights =
            cpu_forward::CpuWeights::new(&self.bert_untracked, tokens >= TRANSPOSE_MIN_TOKENS)?;
        let embedded: Vec<(Vec<usize>, Vec<Vec<f32>>)> = if buckets.len() == 1 || threads == 1 {
            // One batch: split its matrix products over the cores instead.
            buckets
                .into_iter()
                .map(|bucket| {
                    let refs: Vec<&[u32]> = bucket.iter().map(|&i| ids[i].as_slice()).collect();
                    let rows = weights.embed(&refs, pooling, threads)?;
                    Ok((bucket, rows))
                })
                .collect::<Result<_>>()?
        } else {
            buckets
                .into_par_iter()
                .map(|bucket| {
                    let refs: Vec<&[u32]> = bucket.iter().map(|&i| ids[i].as_slice()).collect();
                    let rows = weights.embed(&refs, pooling, 1)?;
                    Ok((bucket, rows))
                })
                .collect::<Result<_>>()?
        };
        Ok(scatter(embedded, texts.len()))
    }

    /// The same embeddings as [`TextEncoder::embed`] through candle ops on padded batches (the path every
    /// device supports): the reference the CPU fast path is tested against, and the path used on GPUs.
    ///
    /// With a half-precision `dtype` in the settings, the forward pass runs on a half-precision copy of the
    /// weights made for this call (a conversion that takes well under a millisecond on a GPU, so weights
    /// changed by training are always the ones used); pooling and normalisation stay f32.
    pub fn embed_reference(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = self.tokenizer.tokenize(texts)?;
        let buckets = self.buckets(&ids);
        let half = match self.settings.dtype {
            InferenceDType::F32 => None,
            other => Some(self.half_precision_bert(other.dtype())?),
        };
        let embedded: Vec<(Vec<usize>, Vec<Vec<f32>>)> = buckets
            .into_iter()
            .map(|bucket| {
                let refs: Vec<&[u32]> = bucket.iter().map(|&i| ids[i].as_slice()).collect();
                let batch = self.tokenizer.batch(&refs, &self.device)?;
                let pooled = match &half {
                    None => self.embed_batch(&batch, ForwardMode::Inference)?,
                    Some(bert) => {
                        let hidden = bert
                            .forward(
                                &batch.input_ids,
                                &batch.attention_mask,
                                ForwardMode::Inference,
                            )?
                            .to_dtype(DType::F32)?;
                        l2_normalize(&self.settings.pooling.pool(&hidden, &batch.attention_mask)?)?
                    }
                };
                Ok((bucket, to_rows(&pooled)?))
            })
            .collect::<Result<_>>()?;
        Ok(scatter(embedded, texts.len()))
    }

    /// An untracked copy of the current weights in `dtype`.
    fn half_precision_bert(&self, dtype: DType) -> Result<BertEncoder> {
        let data = self
            .vars
            .data()
            .lock()
            .map_err(|_| ModelError::InvalidSetting("variable map poisoned".into()))?;
        let converted = data
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().detach().to_dtype(dtype)?)))
            .collect::<Result<HashMap<String, Tensor>>>()?;
        drop(data);
        let root = candle_nn::VarBuilder::from_tensors(converted, dtype, &self.device);
        let prefix = self.weight_prefix.trim_end_matches('.');
        let root = if prefix.is_empty() {
            root
        } else {
            root.pp(prefix)
        };
        Ok(BertEncoder::new(self.bert.config(), root)?)
    }

    fn buckets(&self, ids: &[Vec<u32>]) -> Vec<Vec<usize>> {
        let lengths: Vec<usize> = ids.iter().map(|s| s.len()).collect();
        length_buckets(
            &lengths,
            self.settings.batch_size,
            self.settings.max_batch_tokens,
        )
    }

    /// Replaces the weights with those of a checkpoint file written by [`TextEncoder::save_weights`].
    pub fn load_weights(&self, path: &Path) -> Result<()> {
        fill_vars(&self.vars, path, &self.device)
    }

    /// Writes the weights as safetensors, with the Hugging Face names.
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        Ok(self.vars.save(path)?)
    }
}

/// Puts each bucket's rows back at their texts' positions.
fn scatter(embedded: Vec<(Vec<usize>, Vec<Vec<f32>>)>, count: usize) -> Vec<Vec<f32>> {
    let mut out = vec![Vec::new(); count];
    for (bucket, rows) in embedded {
        for (index, row) in bucket.into_iter().zip(rows) {
            out[index] = row;
        }
    }
    out
}

/// Parses a `config.json`.
pub fn read_config(path: &Path) -> Result<BertConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::BadConfig {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let config: BertConfig = serde_json::from_str(&text).map_err(|e| ModelError::BadConfig {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    config.validate().map_err(|reason| ModelError::BadConfig {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(config)
}

/// Creates the encoder's variables under the prefix the checkpoint uses and fills them from `weights`;
/// returns the tracked encoder, an untracked twin sharing its storage, and the checkpoint's name prefix.
fn build_bert(
    config: &BertConfig,
    vars: &VarMap,
    weights: &Path,
    device: &Device,
) -> Result<(BertEncoder, BertEncoder, String)> {
    let bad = |reason: String| ModelError::BadWeights {
        path: weights.to_path_buf(),
        reason,
    };
    let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(weights) }
        .map_err(|e| bad(e.to_string()))?;
    let names: Vec<String> = file.tensors().into_iter().map(|(name, _)| name).collect();
    let prefix = weight_prefix(&names, config.model_type.as_deref()).ok_or_else(|| {
        bad("no `embeddings.word_embeddings.weight` tensor under any known prefix".into())
    })?;
    let under_prefix = |vb: candle_nn::VarBuilder<'static>| {
        if prefix.is_empty() {
            vb
        } else {
            vb.pp(prefix.trim_end_matches('.'))
        }
    };
    // Put the checkpoint's tensors in the map first: building the encoder then finds every variable
    // instead of drawing random initial values for 22M weights only to overwrite them.
    {
        let mut data = vars
            .data()
            .lock()
            .map_err(|_| bad("variable map poisoned".into()))?;
        for name in BertEncoder::parameter_names(config) {
            let name = format!("{prefix}{name}");
            let tensor = file
                .load(&name, device)
                .map_err(|e| bad(format!("tensor {name}: {e}")))?
                .to_dtype(DType::F32)?;
            data.insert(name, candle_core::Var::from_tensor(&tensor)?);
        }
    }
    let root = candle_nn::VarBuilder::from_varmap(vars, DType::F32, device);
    let bert = BertEncoder::new(config, under_prefix(root)).map_err(|e| bad(e.to_string()))?;
    let detached: HashMap<String, Tensor> = {
        let data = vars
            .data()
            .lock()
            .map_err(|_| bad("variable map poisoned".into()))?;
        data.iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect()
    };
    let untracked_root = candle_nn::VarBuilder::from_tensors(detached, DType::F32, device);
    let bert_untracked =
        BertEncoder::new(config, under_prefix(untracked_root)).map_err(|e| bad(e.to_string()))?;
    Ok((bert, bert_untracked, prefix))
}

/// The prefix ("", "bert.", "<model_type>.") before `embeddings.word_embeddings.weight` in a checkpoint.
fn weight_prefix(names: &[String], model_type: Option<&str>) -> Option<String> {
    let mut candidates = vec![String::new(), "bert.".to_string()];
    if let Some(model_type) = model_type {
        candidates.push(format!("{model_type}."));
    }
    candidates.into_iter().find(|p| {
        names
            .iter()
            .any(|n| *n == format!("{p}embeddings.word_embeddings.weight"))
    })
}

/// Sets every variable in `vars` from the tensor of the same name in `path`, converting to f32.
pub(crate) fn fill_vars(vars: &VarMap, path: &Path, device: &Device) -> Result<()> {
    let bad = |reason: String| ModelError::BadWeights {
        path: path.to_path_buf(),
        reason,
    };
    let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
        .map_err(|e| bad(e.to_string()))?;
    let data = vars
        .data()
        .lock()
        .map_err(|_| bad("variable map poisoned".into()))?;
    for (name, var) in data.iter() {
        let tensor = file
            .load(name, device)
            .map_err(|e| bad(format!("tensor {name}: {e}")))?
            .to_dtype(DType::F32)?;
        var.set(&tensor)
            .map_err(|e| bad(format!("tensor {name}: {e}")))?;
    }
    Ok(())
}
