//! Finding a model on disk: an explicit directory, then `CONTRASTGEO_MODEL`, then the default models
//! directory that `tools/setup.sh` fills.

use std::path::{Path, PathBuf};

use super::error::{ModelError, Result};

/// Environment variable naming a model directory (overridden by an explicit `--model`).
pub const MODEL_DIR_ENV: &str = "CONTRASTGEO_MODEL";
/// Environment variable naming the project home whose `models/` holds the default model.
pub const HOME_ENV: &str = "CONTRASTGEO_HOME";
/// Directory name of the default base model under `models/`.
pub const DEFAULT_MODEL_NAME: &str = "all-MiniLM-L6-v2";

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

    /// Resolves the model to use: `explicit` if given, else `$CONTRASTGEO_MODEL`, else the default model under
    /// `$CONTRASTGEO_HOME/models`, `./models`, or the source checkout's `models/`.
    pub fn resolve(explicit: Option<&Path>) -> Result<Self> {
        if let Some(dir) = explicit {
            return Self::in_dir(dir);
        }
        if let Some(dir) = std::env::var_os(MODEL_DIR_ENV).filter(|v| !v.is_empty()) {
            return Self::in_dir(Path::new(&dir));
        }
        let tried = default_model_dirs();
        match tried.iter().find(|dir| dir.join("config.json").is_file()) {
            Some(dir) => Self::in_dir(dir),
            None => Err(ModelError::ModelNotFound { tried }),
        }
    }
}

/// Where the default model may live, most specific first.
pub fn default_model_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(home) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(home).join("models").join(DEFAULT_MODEL_NAME));
    }
    dirs.push(PathBuf::from("models").join(DEFAULT_MODEL_NAME));
    // The checkout this binary was built from: lets tests, benches and `cargo run` work from any directory.
    dirs.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(DEFAULT_MODEL_NAME),
    );
    dirs.dedup();
    dirs
}
