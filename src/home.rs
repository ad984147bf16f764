//! Where contrastgeo keeps its data: one resolver for the base model, the gazetteer and the default store.
//!
//! Every path is found the same way, most specific first: an explicit flag, then the item's own environment
//! variable (`CONTRASTGEO_MODEL`, `CONTRASTGEO_GAZETTEER`, `CONTRASTGEO_STORE`), then the data home: the
//! directory named by `$CONTRASTGEO_HOME`, else the platform's data directory (`$XDG_DATA_HOME/contrastgeo`
//! or `~/.local/share/contrastgeo` on Linux, `~/Library/Application Support/contrastgeo` on macOS).
//!
//! Nothing depends on where the binary was built or where it runs from: a binary installed with
//! `cargo install` and one run from a checkout read the same files, and `tools/setup.sh` fills the same
//! directory. Inside the data home:
//!
//! ```text
//! models/all-MiniLM-L6-v2/   config.json, model.safetensors, tokenizer.json   (tools/setup.sh)
//! gazetteer/                 cities15000.json, countries.json, us_states.json (tools/setup.sh)
//! index/default/             the zero-shot world store, built on first use
//! ```

use std::path::{Path, PathBuf};

/// Environment variable naming the data home.
pub const HOME_ENV: &str = "CONTRASTGEO_HOME";
/// Environment variable naming a model directory.
pub const MODEL_DIR_ENV: &str = "CONTRASTGEO_MODEL";
/// Environment variable naming the directory of the gazetteer files.
pub const GAZETTEER_DIR_ENV: &str = "CONTRASTGEO_GAZETTEER";
/// Environment variable naming the store that commands use when `--store` is not given.
pub const STORE_DIR_ENV: &str = "CONTRASTGEO_STORE";
/// Directory name of the default base model under `models/`.
pub const DEFAULT_MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// How the data home was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeOrigin {
    /// `$CONTRASTGEO_HOME`.
    Environment,
    /// The platform's data directory.
    Platform,
    /// Neither exists (no `$HOME`): the current directory.
    CurrentDirectory,
}

/// The data home and the default locations inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataHome {
    /// The data home directory (it may not exist yet).
    pub root: PathBuf,
    /// How it was chosen.
    pub origin: HomeOrigin,
}

impl DataHome {
    /// `$CONTRASTGEO_HOME`, else the platform's data directory plus `contrastgeo`.
    pub fn resolve() -> Self {
        if let Some(home) = env_path(HOME_ENV) {
            return Self {
                root: home,
                origin: HomeOrigin::Environment,
            };
        }
        match dirs::data_dir() {
            Some(dir) => Self {
                root: dir.join("contrastgeo"),
                origin: HomeOrigin::Platform,
            },
            None => Self {
                root: PathBuf::from("."),
                origin: HomeOrigin::CurrentDirectory,
            },
        }
    }

    /// Where `tools/setup.sh` puts the default base model.
    pub fn default_model_dir(&self) -> PathBuf {
        self.root.join("models").join(DEFAULT_MODEL_NAME)
    }

    /// Where `tools/setup.sh` puts the gazetteer files.
    pub fn gazetteer_dir(&self) -> PathBuf {
        self.root.join("gazetteer")
    }

    /// The zero-shot world store, built on first use.
    pub fn default_store_dir(&self) -> PathBuf {
        self.root.join("index").join("default")
    }

    /// One line for start-up logs: the directory and how it was chosen.
    pub fn describe(&self) -> String {
        let origin = match self.origin {
            HomeOrigin::Environment => "from $CONTRASTGEO_HOME",
            HomeOrigin::Platform => "the platform data directory; set $CONTRASTGEO_HOME to move it",
            HomeOrigin::CurrentDirectory => "no home directory found: the current directory",
        };
        format!("{} ({origin})", self.root.display())
    }
}

/// The model directory: `explicit`, else `$CONTRASTGEO_MODEL`, else the data home's default model.
pub fn model_dir(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| env_path(MODEL_DIR_ENV))
        .unwrap_or_else(|| DataHome::resolve().default_model_dir())
}

/// The gazetteer directory: `explicit`, else `$CONTRASTGEO_GAZETTEER`, else the data home's.
pub fn gazetteer_dir(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| env_path(GAZETTEER_DIR_ENV))
        .unwrap_or_else(|| DataHome::resolve().gazetteer_dir())
}

/// A store directory: `explicit`, else `$CONTRASTGEO_STORE`; `None` means the default store
/// ([`default_store_dir`]).
pub fn store_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| env_path(STORE_DIR_ENV))
}

/// The default (zero-shot world) store in the data home.
pub fn default_store_dir() -> PathBuf {
    DataHome::resolve().default_store_dir()
}

/// A non-empty environment variable as a path.
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_paths_win_and_defaults_live_under_one_home() {
        assert_eq!(
            model_dir(Some(Path::new("/m"))),
            PathBuf::from("/m"),
            "a flag beats everything"
        );
        assert_eq!(gazetteer_dir(Some(Path::new("g"))), PathBuf::from("g"));
        assert_eq!(store_dir(Some(Path::new("s"))), Some(PathBuf::from("s")));
        let home = DataHome {
            root: PathBuf::from("/data/cg"),
            origin: HomeOrigin::Environment,
        };
        assert_eq!(
            home.default_model_dir(),
            PathBuf::from("/data/cg/models/all-MiniLM-L6-v2")
        );
        assert_eq!(home.gazetteer_dir(), PathBuf::from("/data/cg/gazetteer"));
        assert_eq!(
            home.default_store_dir(),
            PathBuf::from("/data/cg/index/default")
        );
        assert!(home.describe().contains("CONTRASTGEO_HOME"));
        // Nothing refers to the checkout the binary was built in.
        let resolved = DataHome::resolve();
        assert!(
            !resolved.root.starts_with(env!("CARGO_MANIFEST_DIR"))
                || std::env::var_os(HOME_ENV).is_some()
        );
    }
}
