//! The `contrastgeo` command line: thin clap commands over the library.

pub mod embed;
pub mod eval;
pub mod flags;
pub mod index;
pub mod ingest;
pub mod input;
pub mod locate;
pub mod progress;
pub mod serve;
pub mod train;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use candle_core::Device;

use crate::model::{
    DeviceChoice, EncoderSettings, InferenceDType, InferenceOptions, ModelFiles, Pooling,
    TextEncoder,
};

/// Exit code of a usage error: an unknown or out-of-range flag, refused before any work starts.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a command that finished but rejected some input lines (each reported with its line).
pub const EXIT_REJECTED_LINES: u8 = 3;

/// A flag value or combination of flags that cannot work, found after parsing (e.g. a shard of a command
/// that reads stdin); the binary exits with [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// contrastgeo: where was this post written?
#[derive(Debug, clap::Parser)]
#[command(name = "contrastgeo", version, about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Embed posts with the text encoder and write JSONL vectors.
    Embed(embed::EmbedArgs),
    /// Build or manage a vector index (store) of city prompts and support posts.
    Index(index::IndexArgs),
    /// Predict the city each post was written in, from an index.
    Locate(locate::LocateArgs),
    /// Train a ContrastGeo checkpoint from a few labelled posts per city.
    Train(train::TrainArgs),
    /// Add cities and labelled posts to a store (searchable at once); optionally retrain.
    Ingest(ingest::IngestArgs),
    /// List, roll back or retrain a store's model versions.
    Model(ingest::ModelCommandArgs),
    /// Run the K-shot benchmark protocol (train per K and seed, evaluate every rule).
    Eval(eval::EvalArgs),
    /// Serve the REST API (locate, cities, health, metrics) over a store.
    Serve(serve::ServeArgs),
}

/// Options shared by every command that loads the encoder.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Model directory in Hugging Face layout (config.json, model.safetensors, tokenizer.json).
    #[arg(long, env = crate::model::files::MODEL_DIR_ENV)]
    pub model: Option<PathBuf>,
    /// Where to run the model.
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceChoice,
    /// Longest token sequence; longer posts are truncated.
    #[arg(long, value_parser = flags::at_least_one, default_value_t = EncoderSettings::default().max_length)]
    pub max_length: usize,
    /// Pooling of token states.
    #[arg(long, value_enum, default_value_t)]
    pub pooling: Pooling,
    /// Posts per forward pass [default: 32 on the CPU, 256 on a GPU].
    #[arg(long, value_parser = flags::at_least_one)]
    pub batch_size: Option<usize>,
    /// Most padded tokens per forward pass, so long posts get smaller batches [default: 4096 on the CPU,
    /// 32768 on a GPU].
    #[arg(long, value_parser = flags::at_least_one)]
    pub max_batch_tokens: Option<usize>,
    /// Precision of bulk inference: f16 and bf16 need a GPU (the CPU runs f32); weights and training stay
    /// f32.
    #[arg(long, value_enum, default_value_t)]
    pub dtype: InferenceDType,
}

impl ModelArgs {
    /// Batching and precision on `device`: the flags given, else the device's defaults.
    pub fn inference_options(&self, device: &Device) -> Result<InferenceOptions, UsageError> {
        if device.is_cpu() && self.dtype != InferenceDType::F32 {
            let name = match self.dtype {
                InferenceDType::F16 => "f16",
                _ => "bf16",
            };
            return Err(UsageError(format!(
                "--dtype {name} needs a CUDA device; the CPU runs f32 (drop --dtype, or use --device cuda)"
            )));
        }
        let defaults = InferenceOptions::for_device(device);
        Ok(InferenceOptions {
            batch_size: self.batch_size.unwrap_or(defaults.batch_size),
            max_batch_tokens: self.max_batch_tokens.unwrap_or(defaults.max_batch_tokens),
            dtype: self.dtype,
        })
    }

    /// The encoder settings these flags describe on `device`.
    pub fn settings(&self, device: &Device) -> Result<EncoderSettings, UsageError> {
        let mut settings = EncoderSettings {
            max_length: self.max_length,
            pooling: self.pooling,
            ..Default::default()
        };
        settings.apply(&self.inference_options(device)?);
        Ok(settings)
    }

    /// Resolves, loads and reports the encoder.
    pub fn load_encoder(&self) -> anyhow::Result<TextEncoder> {
        let files = ModelFiles::resolve(self.model.as_deref())?;
        let device = self.device.open()?;
        let settings = self.settings(&device)?;
        tracing::info!(model = %files.dir.display(), ?device, ?settings, "loading encoder");
        Ok(TextEncoder::load(&files, settings, &device)?)
    }
}

/// Opens `path` for writing, or stdout when absent or `-`.
pub fn open_output(path: Option<&Path>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) if p != Path::new("-") => {
            let file =
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
            Box::new(std::io::BufWriter::new(file))
        }
        _ => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}
