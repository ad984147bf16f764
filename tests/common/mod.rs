//! Shared set-up for integration tests: the real base model, loaded once per test binary.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use contrastgeo::model::{EncoderSettings, ModelFiles, TextEncoder};

/// The base model's files; panics with the set-up hint when `tools/setup.sh` has not run.
pub fn model_files() -> ModelFiles {
    ModelFiles::resolve(None).unwrap_or_else(|e| panic!("{e}"))
}

/// A CPU encoder with default settings, shared by the tests of one binary.
pub fn encoder() -> &'static TextEncoder {
    static ENCODER: OnceLock<TextEncoder> = OnceLock::new();
    ENCODER.get_or_init(|| {
        TextEncoder::load(
            &model_files(),
            EncoderSettings::default(),
            &candle_core::Device::Cpu,
        )
        .expect("load encoder")
    })
}

/// A fresh CPU encoder (for tests that change weights).
pub fn fresh_encoder(settings: EncoderSettings) -> TextEncoder {
    TextEncoder::load(&model_files(), settings, &candle_core::Device::Cpu).expect("load encoder")
}

/// `../shared/data` beside the project root.
pub fn shared_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

/// Cosine of two unit vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
