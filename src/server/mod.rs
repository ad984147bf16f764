//! The REST service: `contrastgeo serve`.
//!
//! ```text
//! HTTP request --actix worker--> routes (parse, validate: api) --> service --> batcher queue
//!     --batcher thread--> Engine::locate over the batch --> answers --> actix worker --> JSON response
//! ```
//!
//! Why it is shaped this way:
//! - The socket is bound first and the model and store are loaded on a background thread, so `/healthz`
//!   answers at once and `/readyz` says 503 until the service is ready (the default store may take minutes
//!   to build on first use).
//! - Inference never runs on the async workers: requests are queued and batched by [`batcher`] on one OS
//!   thread, which calls `Engine::locate` once per batch (the engine spreads the work over its own rayon
//!   pool). A full queue answers 503 with `Retry-After`; a request not answered in time gets 504.
//! - Every error is a problem object ([`problem`]), mapped to its status in one exhaustive match.
//! - Routes are one table ([`routes::ROUTES`]) that both registers the handlers and writes the OpenAPI
//!   document ([`openapi`]).
//! - The analyst's web page ([`page`]) is served at `/` from files embedded in the binary; it is a client of
//!   the same REST routes.
//! - SIGTERM and ctrl-c stop the server gracefully: it stops accepting connections, in-flight requests
//!   finish (up to `shutdown_timeout_s`), then the batcher drains and the process exits 0.
//! - Handlers read the engine's current generation per request (`Engine::snapshot`), and each batch runs
//!   on the generation current when it starts, so a generation swapped in with `Engine::swap` (the ingest
//!   issue's retrain) is served from the next request on without a restart.
//! - `read_only` serves a private copy of the store ([`replica`]) so several replicas can serve copies of
//!   one store behind a load balancer. Write routes (the ingest issue) will live in a scope guarded by
//!   [`auth::require_api_key`] and are not mounted on a read-only replica.

pub mod api;
pub mod auth;
pub mod batcher;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod problem;
pub mod replica;
pub mod routes;
pub mod service;
pub mod writes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, App, HttpServer};
use serde::{Deserialize, Serialize};

use crate::engine::{EngineConfig, OpenedStore};
use crate::model::GeoModel;
use api::RequestLimits;
use auth::WriteAccess;
use batcher::BatcherConfig;
use metrics::Metrics;
use replica::StoreReplica;
use service::{AppState, LocateService};

/// Every setting of the service, with defaults; `contrastgeo serve` flags override them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Serve a private copy of the store, without write routes.
    pub read_only: bool,
    /// File holding the API key of the write routes (first non-empty line).
    pub api_key_file: Option<PathBuf>,
    /// HTTP worker threads; 0 for one per CPU core.
    pub workers: usize,
    /// Most posts in one batch request.
    pub batch_limit: usize,
    /// Most characters in a post's text.
    pub max_text_chars: usize,
    /// Largest request body, bytes.
    pub body_limit_bytes: usize,
    /// Most posts waiting for the model; more are refused with 503.
    pub queue_capacity: usize,
    /// Most posts encoded and reranked together.
    pub max_batch_posts: usize,
    /// Most characters of text encoded and reranked together.
    pub max_batch_chars: usize,
    /// How long the batcher waits for more requests to fill a batch, ms.
    pub max_batch_wait_ms: u64,
    /// Time a request may wait for its answer before a 504, ms.
    pub request_timeout_ms: u64,
    /// `Retry-After` of a 503, seconds.
    pub retry_after_s: u64,
    /// How long in-flight requests may take to finish after SIGTERM / ctrl-c, seconds.
    pub shutdown_timeout_s: u64,
    /// The query path's settings (the shortlist size `top_k` is also the largest `top_k` a request may ask).
    pub engine: EngineConfig,
    /// Threads a retrain trains and re-encodes on (the rest stay with the queries); 0 for half the cores.
    pub retrain_threads: usize,
    /// Retrain on its own once this many new labelled posts arrived (with `retrain_quiet_s`); 0 = never.
    pub retrain_after_labels: u64,
    /// ... and no label arrived for this many seconds.
    pub retrain_quiet_s: u64,
    /// Publish the store here (an object-store URL: `file:///dir`, `s3://bucket/prefix`) for followers.
    pub publish: Option<String>,
    /// How often a follower (`contrastgeo serve --follow URL`) polls its writer's URL, seconds.
    pub poll_s: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            read_only: false,
            api_key_file: None,
            workers: 0,
            batch_limit: 64,
            max_text_chars: 2_000,
            body_limit_bytes: 1 << 20,
            queue_capacity: 1_024,
            max_batch_posts: 64,
            max_batch_chars: 32_768,
            max_batch_wait_ms: 10,
            request_timeout_ms: 30_000,
            retry_after_s: 1,
            shutdown_timeout_s: 30,
            engine: EngineConfig::default(),
            retrain_threads: 0,
            retrain_after_labels: 0,
            retrain_quiet_s: 60,
            publish: None,
            poll_s: 5,
        }
    }
}

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is out of range.
    #[error("invalid server setting: {0}")]
    InvalidConfig(String),
    /// The API key file cannot be used.
    #[error(transparent)]
    KeyFile(#[from] auth::KeyFileError),
    /// The socket could not be bound, or a thread could not start.
    #[error("cannot start the server on {addr}: {source}")]
    Start {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The model or the store could not be loaded.
    #[error("cannot load the model and store: {0}")]
    Load(String),
    /// A thread of the server died (a bug).
    #[error("{0}")]
    Thread(String),
    /// The metrics registry refused a metric (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl ServerConfig {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ServeError> {
        let positive = [
            ("batch_limit", self.batch_limit),
            ("max_text_chars", self.max_text_chars),
            ("body_limit_bytes", self.body_limit_bytes),
            ("queue_capacity", self.queue_capacity),
            ("max_batch_posts", self.max_batch_posts),
            ("max_batch_chars", self.max_batch_chars),
            ("request_timeout_ms", self.request_timeout_ms as usize),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ServeError::InvalidConfig(format!(
                "{name} must be at least 1"
            )));
        }
        if self.poll_s == 0 {
            return Err(ServeError::InvalidConfig(
                "poll_s must be at least 1".into(),
            ));
        }
        if self.publish.is_some() && self.read_only {
            return Err(ServeError::InvalidConfig(
                "a read-only replica publishes nothing: publish from the server that owns the store"
                    .into(),
            ));
        }
        if self.batch_limit > self.queue_capacity {
            return Err(ServeError::InvalidConfig(format!(
                "batch_limit ({}) must not exceed queue_capacity ({}): a full batch must fit the queue",
                self.batch_limit, self.queue_capacity
            )));
        }
        self.engine
            .validate()
            .map_err(|e| ServeError::InvalidConfig(e.to_string()))
    }

    /// The limits request bodies are checked against.
    pub fn limits(&self) -> RequestLimits {
        RequestLimits {
            batch_limit: self.batch_limit,
            max_text_chars: self.max_text_chars,
            max_top_k: self.engine.top_k,
        }
    }

    /// The batcher's settings.
    pub fn batcher(&self) -> BatcherConfig {
        BatcherConfig {
            queue_capacity: self.queue_capacity,
            max_batch_posts: self.max_batch_posts,
            max_batch_chars: self.max_batch_chars,
            max_wait: Duration::from_millis(self.max_batch_wait_ms),
        }
    }
}

/// What the background loader hands the server: the model and the store directory it filled.
pub struct StoreSource {
    /// The model answering queries (the one the store was built with).
    pub model: Arc<GeoModel>,
    /// The store directory (copied first in read-only mode).
    pub store: PathBuf,
}

/// Loads the model and finds (or builds) the store; runs on a background thread after the socket is bound.
pub type Loader = Box<dyn FnOnce() -> anyhow::Result<StoreSource> + Send>;

/// A store published elsewhere, followed read-only ([`crate::replication::Follower`]).
#[derive(Debug, Clone)]
pub struct FollowSource {
    /// The URL the writer publishes to.
    pub url: String,
    /// The local directory downloaded generations are kept in.
    pub cache: PathBuf,
    /// Where the downloaded model runs.
    pub device: candle_core::Device,
}

/// What the loader thread opens.
enum Source {
    Load(Loader),
    Follow(FollowSource),
}

/// Whether the server installs SIGTERM / ctrl-c handlers (a binary does; a server inside tests does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signals {
    /// Stop gracefully on SIGTERM or ctrl-c.
    Handle,
    /// Leave signals alone; stop with [`RunningServer::stop`].
    Ignore,
}

/// A started server: its address, and the thread running it.
pub struct RunningServer {
    addr: SocketAddr,
    handle: ServerHandle,
    thread: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// The address it listens on (with the actual port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server stops (a signal, a failed load, or [`Self::stop`] elsewhere).
    pub fn wait(self) -> Result<(), ServeError> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(ServeError::Thread("the server thread panicked".into())))
    }

    /// Stops the server (gracefully: in-flight requests finish) and waits for it.
    pub fn stop(self, graceful: bool) -> Result<(), ServeError> {
        drop(self.handle.stop(graceful));
        self.wait()
    }
}

/// Starts the server and blocks until it stops; SIGTERM or ctrl-c stop it gracefully.
pub fn run(config: ServerConfig, loader: Loader) -> Result<(), ServeError> {
    start(config, loader, Signals::Handle)?.wait()
}

/// Serves a follower of `follow` (read-only, whatever `config.read_only` says) until SIGTERM or ctrl-c.
pub fn run_follower(config: ServerConfig, follow: FollowSource) -> Result<(), ServeError> {
    start_follower(config, follow, Signals::Handle)?.wait()
}

/// Binds the socket and follows `follow` in the background (readiness 503 until the first copy is
/// downloaded and caught up).
pub fn start_follower(
    config: ServerConfig,
    follow: FollowSource,
    signals: Signals,
) -> Result<RunningServer, ServeError> {
    let config = ServerConfig {
        read_only: true,
        ..config
    };
    start_source(config, Source::Follow(follow), signals)
}

/// Binds the socket, starts serving (readiness 503), and loads the model and store in the background.
pub fn start(
    config: ServerConfig,
    loader: Loader,
    signals: Signals,
) -> Result<RunningServer, ServeError> {
    start_source(config, Source::Load(loader), signals)
}

fn start_source(
    config: ServerConfig,
    source: Source,
    signals: Signals,
) -> Result<RunningServer, ServeError> {
    config.validate()?;
    let write_access = write_access(&config)?;
    tracing::info!(
        config = %serde_json::to_string(&config).unwrap_or_default(),
        writes = if write_access.is_enabled() { "need the API key" } else { "disabled" },
        "contrastgeo serve configuration"
    );
    let metrics = Arc::new(Metrics::new()?);
    let state = Arc::new(AppState::new(
        config.clone(),
        Arc::clone(&metrics),
        openapi::document_text(),
    ));
    let addr = config.bind;
    let start_error = |source| ServeError::Start { addr, source };
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let server_state = Arc::clone(&state);
    let thread = std::thread::Builder::new()
        .name("contrastgeo-http".into())
        .spawn(move || serve(server_state, metrics, write_access, signals, started_tx))
        .map_err(start_error)?;
    let (addr, handle) = match started_rx.recv() {
        Ok(started) => started.map_err(start_error)?,
        Err(_) => {
            return Err(thread.join().map_or_else(
                |_| ServeError::Thread("the server thread panicked".into()),
                |r| {
                    r.err().unwrap_or(ServeError::Thread(
                        "the server thread stopped before binding".into(),
                    ))
                },
            ))
        }
    };
    tracing::info!(%addr, "listening on http://{addr}");
    let loader_handle = handle.clone();
    std::thread::Builder::new()
        .name("contrastgeo-load".into())
        .spawn(move || match source {
            Source::Load(loader) => load(&state, loader, &loader_handle),
            Source::Follow(follow) => load_follower(&state, follow, &loader_handle),
        })
        .map_err(start_error)?;
    Ok(RunningServer {
        addr,
        handle,
        thread,
    })
}

/// Who may call write routes: the key of `--api-key-file`, or nobody (no key file, or a read-only replica).
fn write_access(config: &ServerConfig) -> Result<WriteAccess, ServeError> {
    Ok(match (&config.api_key_file, config.read_only) {
        (Some(path), false) => WriteAccess::from_file(path)?,
        (Some(_), true) => {
            tracing::warn!("--api-key-file is ignored: a read-only replica has no write routes");
            WriteAccess::disabled()
        }
        (None, _) => WriteAccess::disabled(),
    })
}

/// The server thread: binds, reports the address, serves until stopped, then drains the batcher.
fn serve(
    state: Arc<AppState>,
    metrics: Arc<Metrics>,
    write_access: WriteAccess,
    signals: Signals,
    started: std::sync::mpsc::Sender<std::io::Result<(SocketAddr, ServerHandle)>>,
) -> Result<(), ServeError> {
    let config = state.config().clone();
    actix_web::rt::System::new().block_on(async move {
        let app_state = web::Data::from(Arc::clone(&state));
        let app_metrics = web::Data::from(metrics);
        let body_limit = config.body_limit_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(app_metrics.clone())
                .app_data(web::Data::new(write_access.clone()))
                .configure(|config| problem::extractor_errors_as_problems(config, body_limit))
                .wrap(ErrorHandlers::new().default_handler(problem::plain_errors_to_problems))
                .wrap(from_fn(metrics::record))
                .configure(routes::configure)
                .default_service(web::to(routes::route_not_found))
        })
        .shutdown_timeout(config.shutdown_timeout_s)
        .disable_signals();
        if config.workers > 0 {
            server = server.workers(config.workers);
        }
        let bound = server.bind(config.bind).and_then(|server| {
            let addr = server
                .addrs()
                .first()
                .copied()
                .ok_or_else(|| std::io::Error::other("bound to no address"))?;
            Ok((addr, server.run()))
        });
        let (addr, server) = match bound {
            Ok(bound) => bound,
            Err(error) => {
                let _ = started.send(Err(error));
                return Ok(());
            }
        };
        let handle = server.handle();
        if signals == Signals::Handle {
            stop_on_signals(&handle);
        }
        let _ = started.send(Ok((addr, handle)));
        let outcome = server.await;
        tracing::info!("HTTP server stopped; draining the inference queue");
        state.shutdown();
        if let Some(error) = state.load_error() {
            return Err(ServeError::Load(error));
        }
        outcome.map_err(|source| ServeError::Start {
            addr: config.bind,
            source,
        })
    })
}

/// Stops the server gracefully on SIGTERM or ctrl-c (actix's own handlers stop at once on ctrl-c).
fn stop_on_signals(handle: &ServerHandle) {
    let on_ctrl_c = handle.clone();
    actix_web::rt::spawn(async move {
        if actix_web::rt::signal::ctrl_c().await.is_ok() {
            tracing::info!("ctrl-c: finishing in-flight requests, then exiting");
            on_ctrl_c.stop(true).await;
        }
    });
    #[cfg(unix)]
    {
        use actix_web::rt::signal::unix::{signal, SignalKind};
        let on_term = handle.clone();
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                actix_web::rt::spawn(async move {
                    if term.recv().await.is_some() {
                        tracing::info!("SIGTERM: finishing in-flight requests, then exiting");
                        on_term.stop(true).await;
                    }
                });
            }
            Err(error) => tracing::warn!("cannot listen for SIGTERM ({error}); ctrl-c still works"),
        }
    }
}

/// The loader thread: model and store, the read-only copy, the engine, the batcher; stops the server when
/// any of it fails.
fn load(state: &AppState, loader: Loader, handle: &ServerHandle) {
    let config = state.config();
    let outcome = (|| -> anyhow::Result<LocateService> {
        let source = loader()?;
        let replica = match config.read_only {
            true => Some(StoreReplica::copy(&source.store).map_err(|e| {
                anyhow::anyhow!("copying the store {}: {e}", source.store.display())
            })?),
            false => None,
        };
        let dir = replica.as_ref().map_or(source.store.as_path(), |r| r.dir());
        // A store with generations answers with its own model and takes writes (unless read-only).
        let publisher = crate::replication::Publisher::shared(config.publish.as_deref())?;
        let options = crate::engine::OpenOptions {
            config: config.engine.clone(),
            device: source.model.device().clone(),
            checkpoint: None,
            publisher,
        };
        let model = &source.model;
        let opened =
            crate::engine::open_store(Some(dir), || Ok(Arc::clone(model)), options, &|_| {})?;
        let engine = opened.engine();
        let writer = match opened {
            OpenedStore::Live(live) if !config.read_only => {
                let threads = match config.retrain_threads {
                    0 => (std::thread::available_parallelism().map_or(2, |n| n.get()) / 2).max(1),
                    n => n,
                };
                let policy = (config.retrain_after_labels > 0).then(|| writes::RetrainPolicy {
                    min_new_labels: config.retrain_after_labels,
                    quiet: Duration::from_secs(config.retrain_quiet_s),
                });
                Some(writes::Writer::new(live, threads, policy))
            }
            _ => None,
        };
        let metrics = state.metrics_arc();
        Ok(LocateService::start(
            engine, writer, replica, config, metrics,
        )?)
    })();
    settle(state, outcome, handle);
}

/// Makes the service ready, or stops the server with the load error.
fn settle(state: &AppState, outcome: anyhow::Result<LocateService>, handle: &ServerHandle) {
    match outcome {
        Ok(service) => {
            state.set_ready(service);
            tracing::info!("ready: the store is open and the model loaded");
        }
        Err(error) => {
            tracing::error!("{error:#}");
            state.set_load_error(format!("{error:#}"));
            drop(handle.stop(false));
        }
    }
}

/// The loader thread of a follower: download and catch up the published store, then serve it.
fn load_follower(state: &AppState, follow: FollowSource, handle: &ServerHandle) {
    let config = state.config();
    let outcome = (|| -> anyhow::Result<LocateService> {
        let follower = crate::replication::Follower::start(
            &follow.url,
            &follow.cache,
            &follow.device,
            config.engine.clone(),
            Duration::from_secs(config.poll_s),
        )?;
        let metrics = state.metrics_arc();
        let service = LocateService::start(follower.engine(), None, None, config, metrics)?;
        Ok(service.following(follower))
    })();
    settle(state, outcome, handle);
}
