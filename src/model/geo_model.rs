//! A ContrastGeo model: post encoder, location encoder (shared or separate), location prompts and the TLM
//! head, with the configuration needed to reload it.
//!
//! A checkpoint directory is itself a Hugging Face model directory for the post encoder (`config.json`,
//! `model.safetensors`, `tokenizer.json`), plus `location_encoder.safetensors` when the encoders are separate,
//! `head.safetensors`, and `contrastgeo.json` ([`GeoModelConfig`]).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::bert::ForwardMode;
use super::encoder::{fill_vars, read_config, EncodedTexts, EncoderSettings, TextEncoder};
use super::error::{ModelError, Result};
use super::files::ModelFiles;
use super::fusion::{Fusion, TlmHead};
use super::prompt::LocationPrompts;
use crate::data::PostInput;
use crate::geo::City;

/// Version of the checkpoint layout written by [`GeoModel::save`].
pub const CHECKPOINT_FORMAT: u32 = 1;
/// The checkpoint's configuration file in its directory.
pub const CONFIG_FILE: &str = "contrastgeo.json";
const HEAD_FILE: &str = "head.safetensors";
const LOCATION_FILE: &str = "location_encoder.safetensors";

/// Everything needed to rebuild a [`GeoModel`] besides its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeoModelConfig {
    /// Checkpoint layout version.
    pub format: u32,
    /// Identifies these weights; the index refuses vectors made by another model id.
    pub model_id: String,
    /// The base checkpoint the encoders started from (directory name).
    pub base_model: String,
    /// Tokenization, pooling and batching of both encoders.
    pub encoder: EncoderSettings,
    /// Location prompt templates.
    pub prompts: LocationPrompts,
    /// Fusion strategy of the TLM head.
    pub fusion: Fusion,
    /// What the post encoder reads of a post.
    pub post_input: PostInput,
    /// One encoder for posts and locations (true) or two.
    pub shared_encoders: bool,
    /// Temperature of the contrastive similarities.
    pub tau: f64,
    /// Whether the TLM head was trained (an untrained head is never used to rerank).
    pub head_trained: bool,
    /// Free-form record of how the model was trained (config, data hash, timings).
    pub training: Option<serde_json::Value>,
}

impl Default for GeoModelConfig {
    fn default() -> Self {
        Self {
            format: CHECKPOINT_FORMAT,
            model_id: String::new(),
            base_model: String::new(),
            encoder: EncoderSettings::default(),
            prompts: LocationPrompts::default(),
            fusion: Fusion::default(),
            post_input: PostInput::default(),
            shared_encoders: true,
            tau: 0.03,
            head_trained: false,
            training: None,
        }
    }
}

impl GeoModelConfig {
    /// Parses and checks a checkpoint's `contrastgeo.json`; the message names the field at fault.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        // Name the field for the settings a hand-edited file most often gets wrong.
        for field in ["fusion", "post_input", "tau", "encoder", "prompts"] {
            if let Some(v) = value.get(field) {
                let checked = match field {
                    "fusion" => serde_json::from_value::<Fusion>(v.clone()).map(drop),
                    "post_input" => serde_json::from_value::<PostInput>(v.clone()).map(drop),
                    "tau" => serde_json::from_value::<f64>(v.clone()).map(drop),
                    "encoder" => serde_json::from_value::<EncoderSettings>(v.clone()).map(drop),
                    _ => serde_json::from_value::<LocationPrompts>(v.clone()).map(drop),
                };
                checked.map_err(|e| format!("`{field}`: {e}"))?;
            }
        }
        let config: Self = serde_json::from_value(value).map_err(|e| e.to_string())?;
        if !(config.tau.is_finite() && config.tau > 0.0) {
            return Err(format!(
                "`tau` must be a finite number > 0, got {}",
                config.tau
            ));
        }
        let e = &config.encoder;
        if e.max_length == 0 || e.batch_size == 0 || e.max_batch_tokens == 0 {
            return Err(
                "`encoder`: max_length, batch_size and max_batch_tokens must be at least 1".into(),
            );
        }
        Ok(config)
    }
}

/// Post and location encoders with the matching head.
pub struct GeoModel {
    config: GeoModelConfig,
    files: ModelFiles,
    post_encoder: TextEncoder,
    location_encoder: Option<TextEncoder>,
    head: TlmHead,
    head_vars: VarMap,
}

impl GeoModel {
    /// A fresh model from a base checkpoint (untrained head): for training, or for zero-shot use.
    pub fn from_base(
        files: &ModelFiles,
        mut config: GeoModelConfig,
        device: &Device,
    ) -> Result<Self> {
        config.format = CHECKPOINT_FORMAT;
        config.head_trained = false;
        config.base_model = files
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if config.model_id.is_empty() {
            config.model_id = format!(
                "base:{}:{}",
                config.base_model,
                settings_fingerprint(&config)
            );
        }
        let post_encoder = TextEncoder::load(files, config.encoder.clone(), device)?;
        let location_encoder = if config.shared_encoders {
            None
        } else {
            Some(TextEncoder::load(files, config.encoder.clone(), device)?)
        };
        let (head, head_vars) = new_head(config.fusion, post_encoder.hidden_size(), device)?;
        Ok(Self {
            config,
            files: files.clone(),
            post_encoder,
            location_encoder,
            head,
            head_vars,
        })
    }

    /// The configuration of the checkpoint in `dir` (its model id, prompts, encoder settings), without
    /// loading its weights; refuses a checkpoint of another format.
    pub fn read_config(dir: &Path) -> Result<GeoModelConfig> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(|e| ModelError::BadConfig {
            path: config_path.clone(),
            reason: format!(
                "{e} (is {} a contrastgeo checkpoint? `contrastgeo train` writes one)",
                dir.display()
            ),
        })?;
        let config = GeoModelConfig::from_json(&text).map_err(|reason| ModelError::BadConfig {
            path: config_path.clone(),
            reason,
        })?;
        if config.format != CHECKPOINT_FORMAT {
            return Err(ModelError::BadConfig {
                path: config_path,
                reason: format!(
                    "checkpoint format {} but this build reads {CHECKPOINT_FORMAT}; retrain",
                    config.format
                ),
            });
        }
        Ok(config)
    }

    /// Loads a checkpoint directory written by [`GeoModel::save`].
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_with_config(dir, Self::read_config(dir)?, device)
    }

    /// [`Self::load`] with the checkpoint's configuration already read (by [`Self::read_config`]), for a
    /// caller that needed it before the weights.
    pub fn load_with_config(dir: &Path, config: GeoModelConfig, device: &Device) -> Result<Self> {
        let files = ModelFiles::in_dir(dir)?;
        let bert = read_config(&files.config)?;
        let post_encoder = TextEncoder::load_with_weights(
            &bert,
            &files.tokenizer,
            &files.weights,
            config.encoder.clone(),
            device,
        )?;
        let location_encoder = if config.shared_encoders {
            None
        } else {
            Some(TextEncoder::load_with_weights(
                &bert,
                &files.tokenizer,
                &dir.join(LOCATION_FILE),
                config.encoder.clone(),
                device,
            )?)
        };
        let (head, head_vars) = new_head(config.fusion, post_encoder.hidden_size(), device)?;
        fill_vars(&head_vars, &dir.join(HEAD_FILE), device)?;
        Ok(Self {
            config,
            files,
            post_encoder,
            location_encoder,
            head,
            head_vars,
        })
    }

    /// Changes the batching and precision of both encoders' bulk inference (and the config that records
    /// them); what the model computes does not change.
    pub fn set_inference_options(&mut self, options: &super::encoder::InferenceOptions) {
        self.config.encoder.apply(options);
        self.post_encoder.set_inference_options(options);
        if let Some(encoder) = &mut self.location_encoder {
            encoder.set_inference_options(options);
        }
    }

    /// Writes the checkpoint to `dir`, replacing any checkpoint there whole: the files go to a staging
    /// directory beside it, are fsynced, and the directory is renamed into place (see [`crate::atomic_dir`]).
    /// Never in place: a process may have the old `model.safetensors` memory-mapped.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let io = |path: &Path, e: std::io::Error| ModelError::BadWeights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let json = serde_json::to_string_pretty(&self.config)
            .map_err(|e| ModelError::InvalidSetting(e.to_string()))?;
        crate::atomic_dir::write_dir(dir, |staging| -> Result<(), WriteError> {
            for (from, name) in [
                (&self.files.config, "config.json"),
                (&self.files.tokenizer, "tokenizer.json"),
            ] {
                let to = staging.join(name);
                std::fs::copy(from, &to).map_err(|e| io(&to, e))?;
            }
            self.post_encoder
                .save_weights(&staging.join("model.safetensors"))?;
            if let Some(location) = &self.location_encoder {
                location.save_weights(&staging.join(LOCATION_FILE))?;
            }
            self.head_vars
                .save(staging.join(HEAD_FILE))
                .map_err(ModelError::from)?;
            let config = staging.join(CONFIG_FILE);
            std::fs::write(&config, &json).map_err(|e| io(&config, e))?;
            Ok(())
        })
        .map_err(|e| match e {
            WriteError::Model(e) => e,
            WriteError::Io(e) => io(dir, e),
        })
    }

    /// A digest of every weight (encoders and head, by variable name) and of the settings that change
    /// embeddings: two models with the same digest answer identically. A trained checkpoint's
    /// `model_id` is derived from it, so a store can tell which weights filled it.
    pub fn weights_digest(&self) -> Result<String> {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(settings_fingerprint(&self.config).as_bytes());
        let mut maps: Vec<(&str, &VarMap)> = vec![("post", self.post_encoder.vars())];
        if let Some(location) = &self.location_encoder {
            maps.push(("location", location.vars()));
        }
        maps.push(("head", &self.head_vars));
        for (part, map) in maps {
            let data = map.data().lock().map_err(|_| {
                ModelError::InvalidSetting("a weight map's lock is poisoned".into())
            })?;
            let mut names: Vec<&String> = data.keys().collect();
            names.sort();
            for name in names {
                let values: Vec<f32> = data[name]
                    .as_tensor()
                    .flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1()?;
                hasher.update(part.as_bytes());
                hasher.update(name.as_bytes());
                for v in values {
                    hasher.update(v.to_le_bytes());
                }
            }
        }
        let digest = hasher.finalize();
        Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The configuration.
    pub fn config(&self) -> &GeoModelConfig {
        &self.config
    }

    /// Mutable configuration (the trainer records its settings and marks the head trained).
    pub fn config_mut(&mut self) -> &mut GeoModelConfig {
        &mut self.config
    }

    /// The encoder of posts.
    pub fn post_encoder(&self) -> &TextEncoder {
        &self.post_encoder
    }

    /// The encoder of location prompts (the post encoder when shared).
    pub fn location_encoder(&self) -> &TextEncoder {
        self.location_encoder.as_ref().unwrap_or(&self.post_encoder)
    }

    /// The TLM head.
    pub fn head(&self) -> &TlmHead {
        &self.head
    }

    /// The head's trainable weights.
    pub fn head_vars(&self) -> &VarMap {
        &self.head_vars
    }

    /// Every encoder variable map (one when shared).
    pub fn encoder_vars(&self) -> Vec<&VarMap> {
        let mut maps = vec![self.post_encoder.vars()];
        maps.extend(self.location_encoder.as_ref().map(|e| e.vars()));
        maps
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.post_encoder.device()
    }

    /// The model's files of origin (base model or checkpoint).
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// Encodes cities as one batch: `pooled` is the mean of the templates' unit vectors `[C, H]`; `hidden` and
    /// `mask` are the first template's token states (the cross-attention fusion reads them).
    pub fn encode_cities(&self, cities: &[&City], mode: ForwardMode) -> Result<EncodedTexts> {
        let prompts = self.config.prompts.render_all(cities);
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let encoded = self.location_encoder().encode_texts(&refs, mode)?;
        let templates = self.config.prompts.templates().len();
        if templates == 1 {
            return Ok(encoded);
        }
        let (n, h) = (cities.len(), encoded.pooled.dim(1)?);
        let pooled = encoded.pooled.reshape((templates, n, h))?.mean(0)?;
        Ok(EncodedTexts {
            pooled,
            hidden: encoded.hidden.narrow(0, 0, n)?,
            mask: encoded.mask.narrow(0, 0, n)?,
        })
    }

    /// Unit prompt vectors of many cities for inference (bucketed, parallel); the template mean when several.
    pub fn city_vectors(&self, cities: &[&City]) -> Result<Vec<Vec<f32>>> {
        let prompts = self.config.prompts.render_all(cities);
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let rows = self.location_encoder().embed(&refs)?;
        let n = cities.len();
        let templates = self.config.prompts.templates().len();
        Ok((0..n)
            .map(|c| {
                let mut mean = vec![0f32; rows[c].len()];
                for t in 0..templates {
                    for (m, x) in mean.iter_mut().zip(&rows[t * n + c]) {
                        *m += x / templates as f32;
                    }
                }
                mean
            })
            .collect())
    }

    /// Matching logits `[N]` for pairs `(post_rows[i], city_rows[i])` of two encodings.
    pub fn match_logits(
        &self,
        posts: &EncodedTexts,
        post_rows: &[u32],
        cities: &EncodedTexts,
        city_rows: &[u32],
        mode: ForwardMode,
    ) -> Result<Tensor> {
        let device = self.device();
        let post_rows = Tensor::new(post_rows, device)?;
        let city_rows = Tensor::new(city_rows, device)?;
        Ok(self.head.forward(
            &super::fusion::PairSide {
                encoded: posts,
                rows: &post_rows,
            },
            &super::fusion::PairSide {
                encoded: cities,
                rows: &city_rows,
            },
            mode,
        )?)
    }
}

/// What can fail while a checkpoint directory is written.
enum WriteError {
    Model(ModelError),
    Io(std::io::Error),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<ModelError> for WriteError {
    fn from(e: ModelError) -> Self {
        Self::Model(e)
    }
}

/// A freshly initialised TLM head with its own variable map (filled from a checkpoint by the caller).
fn new_head(fusion: Fusion, hidden: usize, device: &Device) -> Result<(TlmHead, VarMap)> {
    let vars = VarMap::new();
    let head = TlmHead::new(
        fusion,
        hidden,
        VarBuilder::from_varmap(&vars, DType::F32, device),
    )?;
    Ok((head, vars))
}

/// A short stable fingerprint of the settings that change embeddings.
fn settings_fingerprint(config: &GeoModelConfig) -> String {
    let key = serde_json::json!([
        config.encoder.max_length,
        config.encoder.pooling,
        config.prompts,
        config.post_input
    ]);
    format!("{:08x}", crc32fast::hash(key.to_string().as_bytes()))
}

/// Where checkpoints are written by default.
pub fn default_checkpoint_dir() -> PathBuf {
    PathBuf::from("checkpoints").join("latest")
}
