//! `contrastgeo train`: few-shot training of a ContrastGeo checkpoint.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;

use super::flags;
use super::progress::bulk_progress;
use super::ModelArgs;
use crate::data::{self, split::Split, PostInput};
use crate::geo::CityTable;
use crate::model::{Fusion, GeoModel, GeoModelConfig, LocationPrompts, ModelFiles};
use crate::train::{train, NegativeSampling, TrainConfig};

/// Arguments of `contrastgeo train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Labelled posts (JSONL: text, city_id and/or lat/lon, ...).
    #[arg(long)]
    pub data: PathBuf,
    /// The candidate cities (JSONL city records).
    #[arg(long)]
    pub cities: PathBuf,
    /// A split file (`split.json`): draw the K shots from each city's `support` ids only.
    #[arg(long)]
    pub split: Option<PathBuf>,
    /// Support posts per city (K).
    #[arg(long, value_parser = flags::at_least_one, default_value_t = 5)]
    pub shots: usize,
    /// Output checkpoint directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Model and training options.
    #[command(flatten)]
    pub options: TrainOptions,
}

/// Options shared by `train` and `eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainOptions {
    /// Base model options.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Fusion strategy of the TLM head.
    #[arg(long, value_enum, default_value_t)]
    pub fusion: Fusion,
    /// Location prompt template(s); repeat for several ({place}, {name}, {admin1}, {country}).
    #[arg(long = "prompt")]
    pub prompts: Vec<String>,
    /// What the post encoder reads of a post.
    #[arg(long, value_enum, default_value_t)]
    pub post_input: PostInput,
    /// Separate post and location encoders (default: one shared encoder).
    #[arg(long)]
    pub separate_encoders: bool,
    /// Contrastive temperature (> 0).
    #[arg(long, value_parser = flags::positive_f64, default_value_t = 0.03)]
    pub tau: f64,
    /// Radius for binding coordinate-only posts to a city, km.
    #[arg(long, value_parser = flags::positive_f64, default_value_t = data::DEFAULT_ASSIGN_RADIUS_KM)]
    pub radius_km: f64,
    /// Seed of the K-shot draw and of training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Passes over the support posts.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
    /// Minimum optimiser steps.
    #[arg(long, default_value_t = TrainConfig::default().min_steps)]
    pub min_steps: usize,
    /// Posts per step.
    #[arg(long, value_parser = flags::at_least_one, default_value_t = TrainConfig::default().batch_size)]
    pub train_batch: usize,
    /// Encoder learning rate.
    #[arg(long, value_parser = flags::non_negative_f64, default_value_t = TrainConfig::default().lr)]
    pub lr: f64,
    /// Head learning rate.
    #[arg(long, value_parser = flags::non_negative_f64, default_value_t = TrainConfig::default().head_lr)]
    pub head_lr: f64,
    /// Weight of the TLM loss.
    #[arg(long, value_parser = flags::non_negative_f64, default_value_t = 1.0)]
    pub lambda_tlm: f64,
    /// Switch the TLC objective off (ablation).
    #[arg(long)]
    pub no_tlc: bool,
    /// Switch the TLM objective off (ablation).
    #[arg(long)]
    pub no_tlm: bool,
    /// Hard negatives per post.
    #[arg(long, default_value_t = 6)]
    pub negatives: usize,
    /// How hard negatives are chosen.
    #[arg(long, value_enum, default_value_t)]
    pub negative_sampling: NegativeSampling,
    /// Also train the word-embedding matrix.
    #[arg(long)]
    pub train_word_embeddings: bool,
    /// Learn the contrastive temperature (starting from --tau).
    #[arg(long)]
    pub learn_tau: bool,
    /// Class-balanced epochs: at most this many posts of each city per epoch, drawn afresh each epoch.
    #[arg(long, value_parser = flags::at_least_one)]
    pub max_posts_per_city: Option<usize>,
}

impl TrainOptions {
    /// The model configuration these flags describe.
    pub fn model_config(&self, device: &Device) -> anyhow::Result<GeoModelConfig> {
        let prompts = if self.prompts.is_empty() {
            LocationPrompts::default()
        } else {
            LocationPrompts::new(self.prompts.clone())?
        };
        Ok(GeoModelConfig {
            encoder: self.model.settings(device)?,
            prompts,
            fusion: self.fusion,
            post_input: self.post_input,
            shared_encoders: !self.separate_encoders,
            tau: self.tau,
            ..Default::default()
        })
    }

    /// The training configuration these flags describe.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            min_steps: self.min_steps,
            batch_size: self.train_batch,
            lr: self.lr,
            head_lr: self.head_lr,
            lambda_tlm: self.lambda_tlm,
            use_tlc: !self.no_tlc,
            use_tlm: !self.no_tlm,
            negatives: self.negatives,
            negative_sampling: self.negative_sampling,
            freeze_word_embeddings: !self.train_word_embeddings,
            seed: self.seed,
            learn_tau: self.learn_tau,
            max_posts_per_city: self.max_posts_per_city,
            ..Default::default()
        }
    }

    /// A fresh model from the base checkpoint.
    pub fn base_model(&self) -> anyhow::Result<GeoModel> {
        let files = ModelFiles::resolve(self.model.model.as_deref())?;
        let device = self.model.device.open()?;
        Ok(GeoModel::from_base(
            &files,
            self.model_config(&device)?,
            &device,
        )?)
    }
}

/// Trains `model` with a progress bar on stderr.
pub fn train_with_progress(
    model: &mut GeoModel,
    cities: &CityTable,
    posts: &[data::CityPost],
    config: &TrainConfig,
) -> anyhow::Result<crate::train::TrainReport> {
    let bar = bulk_progress(None);
    let report = train(model, cities, posts, config, &mut |s| {
        bar.set_message(format!(
            "step {}/{} loss {:.3} (tlc {:.3}, tlm {:.3}) {:.1} posts/s",
            s.step, s.steps, s.loss, s.tlc, s.tlm, s.posts_per_s
        ));
        bar.tick();
        log_step(s);
    })?;
    bar.finish_and_clear();
    Ok(report)
}

/// Runs the command.
pub fn run(args: &TrainArgs) -> anyhow::Result<usize> {
    let cities = CityTable::read_jsonl(&args.cities)?;
    let read = data::read_labelled_posts(&args.data)?;
    for (line, why) in read.rejected.iter().take(20) {
        eprintln!("{}:{line}: {why}; skipped", args.data.display());
    }
    if read.rejected.len() > 20 {
        eprintln!(
            "{}: {} more rejected line(s) not shown",
            args.data.display(),
            read.rejected.len() - 20
        );
    }
    let (mut bound, dropped) = data::assign_cities(read.posts, &cities, args.options.radius_km);
    if args.split.is_none() {
        // Without a split every post may be drawn, and the draw goes by id: a post without an `id` is known
        // by its position instead of being left out (which left nothing to train on).
        data::split::name_unnamed_posts(&mut bound);
    }
    let support = match &args.split {
        Some(path) => {
            data::split::sample_k_shot(&Split::read(path)?, &bound, args.shots, args.options.seed)
        }
        None => data::split::sample_k_shot(
            &Split::all_support(&bound, &cities),
            &bound,
            args.shots,
            args.options.seed,
        ),
    };
    tracing::info!(
        posts = bound.len(),
        dropped,
        rejected = read.rejected.len(),
        support = support.len(),
        cities = cities.len(),
        "training data"
    );
    let mut model = args.options.base_model()?;
    let config = args.options.train_config();
    tracing::info!(?config, model = ?model.config(), "training");
    let report = train_with_progress(&mut model, &cities, &support, &config)?;
    model
        .save(&args.out)
        .with_context(|| format!("saving checkpoint to {}", args.out.display()))?;
    eprintln!(
        "trained {} steps in {:.1}s ({:.1} posts/s), loss {:.3} -> {:.3}; checkpoint in {}",
        report.steps,
        report.seconds,
        report.posts_per_s,
        report.first_loss,
        report.last_loss,
        args.out.display()
    );
    // Like the bulk commands: a finished run with rejected input lines exits non-zero.
    Ok(read.rejected.len())
}

/// Logs every tenth training step (and the last) for non-interactive runs.
pub fn log_step(s: &crate::train::StepReport) {
    if s.step.is_multiple_of(10) || s.step == s.steps {
        tracing::info!(
            step = s.step,
            steps = s.steps,
            loss = s.loss,
            tlc = s.tlc,
            tlm = s.tlm,
            posts_per_s = s.posts_per_s,
            "training"
        );
    }
}
