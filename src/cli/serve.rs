//! `contrastgeo serve`: the REST service over a store (the embedded default when none is given).
//!
//! Thin: flags become a [`ServerConfig`], the model and store are found the way `locate` finds them (on the
//! server's loader thread, after the socket is bound), and [`crate::server::run`] does the rest.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::flags;
use super::index::{open_or_build_default, GeoModelArgs};
use super::locate::EngineArgs;
use super::UsageError;
use crate::server::{self, ServeError, ServerConfig, StoreSource};

/// Arguments of `contrastgeo serve`; every setting defaults to [`ServerConfig::default`].
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Store directory [default: $CONTRASTGEO_STORE, else index/default in the data home, built from the
    /// gazetteer's city prompts on first use while /readyz answers 503].
    #[arg(long, env = crate::home::STORE_DIR_ENV)]
    pub store: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port, logged at start-up).
    #[arg(long, env = "CONTRASTGEO_BIND", default_value_t = ServerConfig::default().bind)]
    pub bind: SocketAddr,
    /// Serve a private copy of the store without write routes, so several replicas can serve one store.
    #[arg(long)]
    pub read_only: bool,
    /// Publish the store to this object-store URL (`file:///dir`, or `s3://bucket/prefix` in a build with
    /// the `s3` feature; credentials and `AWS_ENDPOINT_URL` from the environment): every generation, and
    /// every ingest batch before it is acknowledged, for `serve --follow` replicas.
    #[arg(long, env = "CONTRASTGEO_PUBLISH_URL", conflicts_with_all = ["read_only", "follow"])]
    pub publish: Option<String>,
    /// Serve a read-only replica of the store a writer publishes at this URL, kept up to date by polling;
    /// `--store` is then the local cache of downloaded generations [default: a temporary directory].
    #[arg(long, env = "CONTRASTGEO_FOLLOW_URL", conflicts_with = "read_only")]
    pub follow: Option<String>,
    /// How often a follower polls the URL for new labels and generations, seconds.
    #[arg(long, value_parser = flags::at_least_one_u64, default_value_t = ServerConfig::default().poll_s)]
    pub poll_s: u64,
    /// File holding the API key that write routes require (first non-empty line).
    #[arg(long, env = "CONTRASTGEO_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// HTTP worker threads (0: one per CPU core).
    #[arg(long, default_value_t = ServerConfig::default().workers)]
    pub workers: usize,
    /// Most posts in one batch request.
    #[arg(long, value_parser = flags::at_least_one, default_value_t = ServerConfig::default().batch_limit)]
    pub batch_limit: usize,
    /// Most characters in a post's text.
    #[arg(long, value_parser = flags::at_least_one, default_value_t = ServerConfig::default().max_text_chars)]
    pub max_text_chars: usize,
    /// Largest request body in bytes.
    #[arg(long, value_parser = flags::at_least_one, default_value_t = ServerConfig::default().body_limit_bytes)]
    pub body_limit_bytes: usize,
    /// Most posts waiting for the model; more get 503 with Retry-After.
    #[arg(long, value_parser = flags::at_least_one, default_value_t = ServerConfig::default().queue_capacity)]
    pub queue_capacity: usize,
    /// Most posts encoded and reranked together.
    #[arg(long, value_parser = flags::at_least_one, default_value_t = ServerConfig::default().max_batch_posts)]
    pub max_batch_posts: usize,
    /// Most characters of text encoded and reranked together.
    #[arg(long, value_parser = flags::at_least_one, default_value_t = ServerConfig::default().max_batch_chars)]
    pub max_batch_chars: usize,
    /// How long the batcher waits for more requests to fill a batch, ms.
    #[arg(long, default_value_t = ServerConfig::default().max_batch_wait_ms)]
    pub max_batch_wait_ms: u64,
    /// Time a request may wait for its answer before a 504, ms.
    #[arg(long, default_value_t = ServerConfig::default().request_timeout_ms)]
    pub request_timeout_ms: u64,
    /// Retry-After of a 503, seconds.
    #[arg(long, default_value_t = ServerConfig::default().retry_after_s)]
    pub retry_after_s: u64,
    /// How long in-flight requests may take to finish after SIGTERM / ctrl-c, seconds.
    #[arg(long, default_value_t = ServerConfig::default().shutdown_timeout_s)]
    pub shutdown_timeout_s: u64,
    /// Threads a retrain trains on, leaving the rest to queries (0: half the cores).
    #[arg(long, default_value_t = ServerConfig::default().retrain_threads)]
    pub retrain_threads: usize,
    /// Retrain on its own once this many new labelled posts arrived (and `--retrain-quiet-s` passed
    /// without one); 0 never retrains on its own.
    #[arg(long, default_value_t = ServerConfig::default().retrain_after_labels)]
    pub retrain_after_labels: u64,
    /// Seconds without a new label before an automatic retrain starts.
    #[arg(long, default_value_t = ServerConfig::default().retrain_quiet_s)]
    pub retrain_quiet_s: u64,
    /// The model (must be the one the store was built with).
    #[command(flatten)]
    pub model: GeoModelArgs,
    /// Query settings.
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl ServeArgs {
    /// The server configuration these flags describe.
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            bind: self.bind,
            read_only: self.read_only,
            api_key_file: self.api_key_file.clone(),
            workers: self.workers,
            batch_limit: self.batch_limit,
            max_text_chars: self.max_text_chars,
            body_limit_bytes: self.body_limit_bytes,
            queue_capacity: self.queue_capacity,
            max_batch_posts: self.max_batch_posts,
            max_batch_chars: self.max_batch_chars,
            max_batch_wait_ms: self.max_batch_wait_ms,
            request_timeout_ms: self.request_timeout_ms,
            retry_after_s: self.retry_after_s,
            shutdown_timeout_s: self.shutdown_timeout_s,
            engine: self.engine.config_for(self.store.as_deref()),
            retrain_threads: self.retrain_threads,
            retrain_after_labels: self.retrain_after_labels,
            retrain_quiet_s: self.retrain_quiet_s,
            publish: self.publish.clone(),
            poll_s: self.poll_s,
        }
    }
}

/// Runs the service until SIGTERM or ctrl-c; returns 0 (no input lines to reject).
pub fn run(args: &ServeArgs) -> anyhow::Result<usize> {
    if let Some(url) = &args.follow {
        return follow(args, url);
    }
    let model_args = args.model.clone();
    let store = args.store.clone();
    let loader: server::Loader = Box::new(move || {
        let model = Arc::new(model_args.load()?);
        let store = open_or_build_default(store.as_deref(), &model)?;
        Ok(StoreSource { model, store })
    });
    match server::run(args.config(), loader) {
        Err(ServeError::InvalidConfig(why)) => Err(UsageError(why).into()),
        other => Ok(other.map(|()| 0)?),
    }
}

/// `serve --follow URL`: a read-only replica of a published store.
fn follow(args: &ServeArgs, url: &str) -> anyhow::Result<usize> {
    // The cache outlives the process when named (a restart reuses what it downloaded), else it is a
    // temporary directory removed at exit.
    let (cache, _temporary) = match &args.store {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("contrastgeo-follow-")
                .tempdir()?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let source = server::FollowSource {
        url: url.to_string(),
        cache,
        device: args.model.model.device.open()?,
    };
    match server::run_follower(args.config(), source) {
        Err(ServeError::InvalidConfig(why)) => Err(UsageError(why).into()),
        other => Ok(other.map(|()| 0)?),
    }
}
