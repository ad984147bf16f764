//! A model on disk: the three files of a Hugging Face checkpoint, found through [`crate::home`] (an explicit
//! directory, then `CONTRASTGEO_MODEL`, then the data home's `models/` that `tools/setup.sh` fills).

use std::path::{Path, PathBuf};

use super::error::{ModelError, Result};

pub use crate::home::{DEFAULT_MODEL_NAME, HOME_ENV, MODEL_DIR_ENV};

/// The three files of a Hugging Face BERT-family checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The model directory.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors`.
    pub weights: PathBuf,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
}

impl ModelFiles {
    /// The files of the model in `dir`, checking that each exists.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let file = |name: &'static str| -> Result<PathBuf> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(ModelError::MissingModelFile {
                    dir: dir.to_path_buf(),
                    file: name,
                })
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config: file("config.json")?,
            weights: file("model.safetensors")?,
            tokenizer: file("tokenizer.json")?,
        })
    }

    /// Resolves the model to use: `explicit` if given, else `$CONTRASTGEO_MODEL`, else the default model in
    /// the data home (see [`crate::home`]).
    pub fn resolve(explicit: Option<&Path>) -> Result<Self> {
        let dir = crate::home::model_dir(explicit);
        if explicit.is_none() && !dir.join("config.json").is_file() {
            return Err(ModelError::ModelNotFound { tried: vec![dir] });
        }
        Self::in_dir(&dir)
    }
}
