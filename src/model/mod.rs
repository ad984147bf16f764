//! The model layer: text -> tokens -> trainable BERT -> pooled unit embedding.
//!
//! Pure tensor code; it knows nothing of storage, HTTP or files of posts.

pub mod bert;
pub mod config;
pub mod device;
pub mod encoder;
pub mod error;
pub mod files;
pub mod pooling;
pub mod tokenize;

pub use bert::{BertEncoder, ForwardMode};
pub use config::BertConfig;
pub use device::DeviceChoice;
pub use encoder::{EncoderSettings, TextEncoder};
pub use error::{ModelError, Result};
pub use files::ModelFiles;
pub use pooling::Pooling;
