//! Errors of the model layer.

use std::path::PathBuf;

/// Everything that can go wrong between text and embedding.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No model directory could be found.
    #[error("no model found; tried {}. Run `tools/setup.sh` to fetch all-MiniLM-L6-v2, or pass --model DIR / set CONTRASTGEO_MODEL", tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    ModelNotFound {
        /// Every directory that was looked at, in order.
        tried: Vec<PathBuf>,
    },
    /// A model directory lacks one of its files.
    #[error("model directory {dir} has no {file}: expected config.json, model.safetensors and tokenizer.json (Hugging Face layout)")]
    MissingModelFile {
        /// The model directory.
        dir: PathBuf,
        /// The missing file name.
        file: &'static str,
    },
    /// `config.json` could not be read or parsed.
    #[error("cannot read model config {path}: {reason}")]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The weights file does not hold a BERT encoder the config describes.
    #[error("cannot load BERT weights from {path}: {reason}")]
    BadWeights {
        /// The safetensors file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The tokenizer failed to load or to encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A post had no text to encode.
    #[error("text #{index} is empty or whitespace only; nothing to encode")]
    EmptyText {
        /// Position of the text in the request.
        index: usize,
    },
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// The requested device is not available in this build or on this machine.
    #[error("device: {0}")]
    Device(String),
    /// A tensor operation failed.
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result of the model layer.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
