//! The loaded service behind the handlers: the engine, the batcher in front of it, and the server's state
//! before and after loading.
//!
//! Why: the socket is bound before the model and the store are loaded (loading the default store can take
//! minutes the first time), so the state starts empty and `GET /readyz` answers 503 until the background
//! loader installs a [`LocateService`]. Handlers only ask the state for the service and call it.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use super::api::{
    AuthorsLocateResponse, BatchItem, BatchLocateResponse, LocateReply, LocateRequest,
    LocatedAuthor, LocatedPost, ParsedLocate, RequestLimits,
};
use super::batcher::{BatchError, Batcher, SubmitError, Weighed};
use super::metrics::Metrics;
use super::problem::ApiError;
use super::replica::StoreReplica;
use super::ServerConfig;
use crate::engine::{Answer, AuthorRule, Engine, EngineError, PostQuery};

/// A post waiting in the batcher: its text and, when the request gave one, its profile location.
pub struct QueuedPost {
    text: String,
    profile: Option<String>,
}

impl QueuedPost {
    fn of(post: &LocateRequest) -> Self {
        Self {
            text: post.text.clone(),
            profile: post.user_location.clone(),
        }
    }

    fn query(&self) -> PostQuery<'_> {
        PostQuery {
            text: &self.text,
            profile: self.profile.as_deref(),
        }
    }
}

impl Weighed for QueuedPost {
    fn chars(&self) -> usize {
        str::chars(&self.text).count()
            + self.profile.as_deref().map_or(0, |p| str::chars(p).count())
    }
}

/// The engine behind its queue, and the private store copy of a read-only replica.
pub struct LocateService {
    batcher: Batcher<QueuedPost, Answer, EngineError>,
    engine: Arc<Engine>,
    writer: Option<super::writes::Writer>,
    read_only: bool,
    retry_after_s: u64,
    timeout: Duration,
    replica: Mutex<Option<StoreReplica>>,
    follower: Option<Arc<crate::replication::Follower>>,
}

impl LocateService {
    /// Starts the batcher thread in front of `engine`.
    pub fn start(
        engine: Arc<Engine>,
        writer: Option<super::writes::Writer>,
        replica: Option<StoreReplica>,
        config: &ServerConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let worker_engine = Arc::clone(&engine);
        let batcher = Batcher::spawn(config.batcher(), metrics, move |posts: &[QueuedPost]| {
            let queries: Vec<PostQuery> = posts.iter().map(QueuedPost::query).collect();
            worker_engine.locate_posts(&queries)
        })?;
        Ok(Self {
            batcher,
            engine,
            writer,
            read_only: config.read_only,
            retry_after_s: config.retry_after_s,
            timeout: Duration::from_millis(config.request_timeout_ms),
            replica: Mutex::new(replica),
            follower: None,
        })
    }

    /// This service follows a published store through `follower` (kept alive and reported here).
    pub fn following(mut self, follower: Arc<crate::replication::Follower>) -> Self {
        self.follower = Some(follower);
        self
    }

    /// The follower, when this server follows a published store.
    pub fn follower(&self) -> Option<&crate::replication::Follower> {
        self.follower.as_deref()
    }

    /// The engine (for the city routes and readiness).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The write side, or why there is none (a read-only replica, or a store without a label log).
    pub fn writer(&self) -> Result<&super::writes::Writer, ApiError> {
        self.writer.as_ref().ok_or_else(|| ApiError::WritesUnavailable {
            reason: if self.read_only {
                "this server is a read-only replica: send writes to the server that owns the store".into()
            } else {
                "the served store is a plain index without a label log; build a store with \
                 `contrastgeo index build` to add cities and examples"
                    .into()
            },
        })
    }

    /// Whether this is a read-only replica.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Answers a parsed locate request: one post, or a batch where each bad post keeps its own problem.
    pub async fn answer(&self, request: ParsedLocate) -> Result<LocateReply, ApiError> {
        match request {
            ParsedLocate::Single(post) => {
                let answer = self.locate(vec![QueuedPost::of(&post)]).await?.pop();
                let answer = answer.ok_or_else(|| ApiError::Internal {
                    detail: "the engine returned no answer".into(),
                })?;
                Ok(LocateReply::Single(LocatedPost::new(&post, answer)))
            }
            ParsedLocate::ByAuthor(posts) => self.answer_authors(posts).await,
            ParsedLocate::Batch(posts) => {
                let texts: Vec<QueuedPost> = posts
                    .iter()
                    .filter_map(|p| p.as_ref().ok())
                    .map(QueuedPost::of)
                    .collect();
                let mut answers = match texts.is_empty() {
                    true => Vec::new(),
                    false => self.locate(texts).await?,
                }
                .into_iter();
                let results = posts
                    .iter()
                    .enumerate()
                    .map(|(index, post)| {
                        // Only valid posts were located: take the next answer for those alone.
                        let answer = post.as_ref().ok().and_then(|_| answers.next());
                        batch_item(index, post, answer)
                    })
                    .collect();
                Ok(LocateReply::Batch(BatchLocateResponse { results }))
            }
        }
    }

    /// Answers a batch per author: the valid posts grouped by `user` (in order of first appearance), all
    /// authors located in one engine call on a blocking thread (an author is one aggregate, not a post the
    /// batcher could mix with other requests' posts), within the request timeout.
    async fn answer_authors(
        &self,
        posts: Vec<Result<LocateRequest, ApiError>>,
    ) -> Result<LocateReply, ApiError> {
        let mut problems = Vec::new();
        let mut authors: Vec<(String, Vec<usize>)> = Vec::new();
        for (index, post) in posts.iter().enumerate() {
            match post {
                Err(error) => problems.push(error.problem_at(index)),
                Ok(post) => {
                    let user = post.user.clone().unwrap_or_default();
                    match authors.iter_mut().find(|(u, _)| *u == user) {
                        Some((_, own)) => own.push(index),
                        None => authors.push((user, vec![index])),
                    }
                }
            }
        }
        if authors.is_empty() {
            return Ok(LocateReply::Authors(AuthorsLocateResponse {
                authors: Vec::new(),
                problems,
            }));
        }
        let engine = Arc::clone(&self.engine);
        let groups: Vec<Vec<QueuedPost>> = authors
            .iter()
            .map(|(_, own)| {
                own.iter()
                    .filter_map(|&i| posts[i].as_ref().ok().map(QueuedPost::of))
                    .collect()
            })
            .collect();
        let work = actix_web::rt::task::spawn_blocking(move || {
            let queries: Vec<Vec<PostQuery>> = groups
                .iter()
                .map(|g| g.iter().map(QueuedPost::query).collect())
                .collect();
            engine.locate_authors(&queries, AuthorRule::default())
        });
        let answers = match actix_web::rt::time::timeout(self.timeout, work).await {
            Err(_elapsed) => {
                return Err(ApiError::Timeout {
                    timeout_ms: self.timeout.as_millis() as u64,
                })
            }
            Ok(Err(join)) => {
                return Err(ApiError::Internal {
                    detail: format!("the author worker failed: {join}"),
                })
            }
            Ok(Ok(answers)) => answers?,
        };
        Ok(LocateReply::Authors(AuthorsLocateResponse {
            authors: authors
                .into_iter()
                .zip(answers)
                .map(|((user, posts), answer)| LocatedAuthor {
                    user,
                    posts,
                    answer,
                })
                .collect(),
            problems,
        }))
    }

    /// Queues `texts` as one job and waits for their answers, within the request timeout.
    async fn locate(&self, texts: Vec<QueuedPost>) -> Result<Vec<Answer>, ApiError> {
        let receiver = self.batcher.submit(texts).map_err(|e| match e {
            SubmitError::Overloaded { queued, .. } => ApiError::Overloaded {
                queued,
                retry_after_s: self.retry_after_s,
            },
            SubmitError::Closed => ApiError::ShuttingDown,
        })?;
        match actix_web::rt::time::timeout(self.timeout, receiver).await {
            Err(_elapsed) => Err(ApiError::Timeout {
                timeout_ms: self.timeout.as_millis() as u64,
            }),
            Ok(Err(_dropped)) => Err(ApiError::ShuttingDown),
            Ok(Ok(Err(BatchError::Failed(error)))) => Err(error.into()),
            Ok(Ok(Err(BatchError::Worker(detail)))) => Err(ApiError::Internal { detail }),
            Ok(Ok(Ok(answers))) => Ok(answers),
        }
    }

    /// Refuses new work, finishes the queued work, stops the batcher thread, and removes a read-only
    /// replica's store copy (open files stay readable until the process exits).
    pub fn shutdown(&self) {
        if let Some(follower) = &self.follower {
            follower.stop();
        }
        self.batcher.shutdown();
        let replica = self
            .replica
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(replica);
    }
}

/// The batch entry of post `index`: its answer (taken in order from the answers of the valid posts) or its
/// problem.
fn batch_item(
    index: usize,
    post: &Result<LocateRequest, ApiError>,
    answer: Option<Answer>,
) -> BatchItem {
    match (post, answer) {
        (Ok(post), Some(answer)) => BatchItem::Located(LocatedPost::new(post, answer)),
        (Ok(_), None) => BatchItem::Problem(
            ApiError::Internal {
                detail: "the engine returned fewer answers than posts".into(),
            }
            .problem_at(index),
        ),
        (Err(error), _) => BatchItem::Problem(error.problem_at(index)),
    }
}

/// What every handler shares: the configuration, the metrics, and the service once loaded.
pub struct AppState {
    config: ServerConfig,
    limits: RequestLimits,
    metrics: Arc<Metrics>,
    openapi: String,
    service: OnceLock<LocateService>,
    load_error: Mutex<Option<String>>,
}

impl AppState {
    /// The state of a server still loading.
    pub fn new(config: ServerConfig, metrics: Arc<Metrics>, openapi: String) -> Self {
        Self {
            limits: config.limits(),
            config,
            metrics,
            openapi,
            service: OnceLock::new(),
            load_error: Mutex::new(None),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The limits request bodies are checked against.
    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics, shared (for the batcher's observer).
    pub fn metrics_arc(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The OpenAPI document, as served.
    pub fn openapi(&self) -> &str {
        &self.openapi
    }

    /// The service, or 503 while loading.
    pub fn ready(&self) -> Result<&LocateService, ApiError> {
        self.service.get().ok_or(ApiError::NotReady {
            retry_after_s: self.config.retry_after_s,
        })
    }

    /// Installs the loaded service (once; a second one is shut down and dropped).
    pub fn set_ready(&self, service: LocateService) {
        if let Err(extra) = self.service.set(service) {
            extra.shutdown();
        }
    }

    /// Records why loading failed.
    pub fn set_load_error(&self, error: String) {
        *self
            .load_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    /// Why loading failed, if it did.
    pub fn load_error(&self) -> Option<String> {
        self.load_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the service's batcher after the HTTP server has stopped.
    pub fn shutdown(&self) {
        if let Some(service) = self.service.get() {
            service.shutdown();
        }
    }
}
