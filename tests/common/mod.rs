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

/// Runs the real `contrastgeo` binary with `args`, feeding `stdin`; returns (exit code, stdout, stderr).
pub fn run_contrastgeo(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_contrastgeo"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn contrastgeo");
    // A command that fails early (say, on a missing model) may exit before reading its input.
    match child.stdin.take().expect("stdin").write_all(stdin) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.expect("write stdin"),
    }
    let out = child.wait_with_output().expect("wait for contrastgeo");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses JSONL output of a bulk command: the records and their `line` numbers.
pub fn jsonl_records(stdout: &str) -> (Vec<serde_json::Value>, Vec<u64>) {
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let lines = records
        .iter()
        .map(|r| r["line"].as_u64().expect("a line number"))
        .collect();
    (records, lines)
}
