//! `contrastgeo serve`: the REST service over a store (the embedded default when none is given).
//!
//! Thin: flags become a [`ServerConfig`], the model and store are found the way `locate` finds them (on the
//! server's loader thread, after the socket is bound), and [`crate::server::run`] does the rest.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::flags;
use super::index::{open_store, store_dir_or_default, GeoModelArgs};
use super::locate::EngineArgs;
use super::UsageError;
use crate::server::{self, OpenedEngine, ServeError, ServerConfig};

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
            engine: self.engine.config(),
        }
    }
}

/// Runs the service until SIGTERM or ctrl-c; returns 0 (no input lines to reject).
pub fn run(args: &ServeArgs) -> anyhow::Result<usize> {
    let config = args.config();
    let (find_model, open_model) = (args.model.clone(), args.model.clone());
    let store = args.store.clone();
    let loader = server::Loader {
        find: Box::new(move || store_dir_or_default(store.as_deref(), &find_model)),
        open: Box::new(move |dir, engine_config| {
            let opened = open_store(Some(dir), &open_model, engine_config)?;
            Ok(OpenedEngine {
                engine: opened.engine(),
                live: opened.live().cloned(),
            })
        }),
    };
    match server::run(config, loader) {
        Err(ServeError::InvalidConfig(why)) => Err(UsageError(why).into()),
        other => Ok(other.map(|()| 0)?),
    }
}
