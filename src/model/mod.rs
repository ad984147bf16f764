//! The model layer: text -> tokens -> trainable BERT -> pooled unit embedding, location prompts, and the
//! fused matching head.
//!
//! Pure tensor code; it knows nothing of storage, HTTP or files of posts.

pub mod bert;
pub mod config;
mod cpu_forward;
pub mod device;
pub mod encoder;
pub mod error;
pub mod files;
pub mod fusion;
pub mod geo_model;
pub mod pooling;
pub mod prompt;
pub mod tokenize;

pub use bert::{BertEncoder, ForwardMode};
pub use config::BertConfig;
pub use device::DeviceChoice;
pub use encoder::{EncodedTexts, EncoderSettings, InferenceDType, InferenceOptions, TextEncoder};
pub use error::{ModelError, Result};
pub use files::ModelFiles;
pub use fusion::{Fusion, TlmHead};
pub use geo_model::{GeoModel, GeoModelConfig};
pub use pooling::Pooling;
pub use prompt::LocationPrompts;
