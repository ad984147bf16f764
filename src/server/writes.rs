//! The write side of the service: add a city with example posts, add examples to a city, retrain, follow
//! the retrain job, list and roll back model versions.
//!
//! Why here and thin: the store does the work ([`LiveStore`]: labels to the durable log first, then into
//! the live generation, searchable at once; a gated retrain built beside the live generation and swapped
//! atomically). This module parses and checks request bodies (naming the field at fault), runs store calls
//! off the async workers (`web::block`), and keeps the retrain jobs a client can poll. A retrain runs on its
//! own thread with a limited number of threads for training, so queries keep their cores.
//!
//! Writes need the API key (checked by the handlers through [`super::auth::WriteAccess`]) and a store with a
//! label log; a read-only replica and a plain index answer them with 405 / 409 problems.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::problem::ApiError;
use crate::data::ingest::NewCity;
use crate::engine::generations::now_unix;
use crate::engine::{
    EngineError, GenerationId, GenerationInfo, LiveStore, RetrainOptions, RetrainProgress,
    RetrainReport,
};
use crate::geo::{City, CityId};
use contrastgeo_index::PostLabel;

/// Body of `POST /v1/cities`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCityRequest {
    /// The city: a new one (name and coordinates), or a gazetteer city's record (with its `id`).
    pub city: NewCity,
    /// Example posts written there (0 or more).
    #[serde(default)]
    pub examples: Vec<String>,
}

/// Body of `POST /v1/cities/{id}/examples`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddExamplesRequest {
    /// Example posts written in the city (at least one).
    pub examples: Vec<String>,
}

/// What an ingest stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IngestResponse {
    /// The city the examples belong to, as stored.
    pub city: City,
    /// Examples stored.
    pub examples_added: usize,
    /// Examples already stored for this city (skipped).
    pub duplicates: usize,
    /// The live generation that now answers with them.
    pub generation: GenerationId,
    /// Milliseconds from the labels being durable to their being searchable.
    pub searchable_after_ms: f64,
}

/// Body of `POST /v1/retrain` (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrainRequest {
    /// Passes over the stored labels.
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Minimum optimiser steps.
    #[serde(default)]
    pub min_steps: Option<usize>,
    /// Largest allowed drop of held-out Acc@1 against the live model.
    #[serde(default)]
    pub gate_margin: Option<f64>,
}

/// State of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Running now.
    Running,
    /// Finished; the new model version is live.
    Succeeded,
    /// Finished; the gate kept the live version (the report says why).
    Rejected,
    /// Stopped by an error.
    Failed,
}

/// A background job (a retrain), as `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Job {
    /// Its id.
    pub id: u64,
    /// What it does: `retrain`.
    pub kind: String,
    /// Where it is.
    pub state: JobState,
    /// The latest progress report while running.
    #[schemars(with = "Option<serde_json::Value>")]
    pub progress: Option<serde_json::Value>,
    /// The retrain's report once finished.
    #[schemars(with = "Option<serde_json::Value>")]
    pub report: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it started, seconds since the Unix epoch.
    pub started_at: u64,
    /// When it finished.
    pub finished_at: Option<u64>,
}

/// Answer of `POST /v1/retrain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobAccepted {
    /// The job started; poll `GET /v1/jobs/{id}`.
    pub job: Job,
}

/// Answer of `GET /v1/models`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ModelList {
    /// The live version.
    pub current: GenerationId,
    /// Every version, oldest first.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub models: Vec<GenerationInfo>,
}

/// Body of `POST /v1/models/rollback`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to make live.
    pub to: GenerationId,
}

/// Answer of `POST /v1/models/rollback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RollbackResponse {
    /// The live version now.
    pub current: GenerationId,
    /// Its model.
    pub model_id: String,
}

/// When the server retrains on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrainPolicy {
    /// Retrain once this many labelled posts arrived after the live version was built.
    pub min_new_labels: u64,
    /// ... and no label arrived for this long.
    pub quiet: Duration,
}

/// The store's write side: the live store, its jobs, and the policy thread.
pub struct Writer {
    store: Arc<LiveStore>,
    jobs: Arc<Jobs>,
    retrain_threads: usize,
    last_ingest: Arc<Mutex<Instant>>,
}

/// Retrain jobs by id.
#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<HashMap<u64, Job>>,
}

impl Jobs {
    fn update(&self, id: u64, change: impl FnOnce(&mut Job)) {
        if let Some(job) = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&id)
        {
            change(job);
        }
    }

    /// The job with this id.
    pub fn get(&self, id: u64) -> Option<Job> {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }
}

impl Writer {
    /// The write side of `store`; retrains train on `retrain_threads` threads. With a `policy`, a thread
    /// starts retrains on its own (it stops when the store is dropped).
    pub fn new(
        store: Arc<LiveStore>,
        retrain_threads: usize,
        policy: Option<RetrainPolicy>,
    ) -> Self {
        let writer = Self {
            store,
            jobs: Arc::new(Jobs::default()),
            retrain_threads,
            last_ingest: Arc::new(Mutex::new(Instant::now())),
        };
        if let Some(policy) = policy {
            writer.start_policy(policy);
        }
        writer
    }

    /// The live store.
    pub fn store(&self) -> &Arc<LiveStore> {
        &self.store
    }

    /// Checks an ingest's texts: each non-empty and at most `max_chars` characters.
    pub fn check_examples(examples: &[String], max_chars: usize) -> Result<(), ApiError> {
        for (i, text) in examples.iter().enumerate() {
            let field = format!("examples[{i}]");
            if text.trim().is_empty() {
                return Err(ApiError::invalid(
                    field,
                    "the example is empty or whitespace only",
                ));
            }
            let chars = text.chars().count();
            if chars > max_chars {
                return Err(ApiError::invalid(
                    field,
                    format!("the example has {chars} characters; the limit is {max_chars}"),
                ));
            }
        }
        Ok(())
    }

    /// Stores `city` (when given) and `examples` of `city_id` (blocking: call through `web::block`).
    pub fn ingest(
        &self,
        city: Option<City>,
        city_id: CityId,
        examples: &[String],
    ) -> Result<IngestResponse, ApiError> {
        let added_at = now_unix();
        let posts: Vec<PostLabel> = examples
            .iter()
            .map(|text| PostLabel {
                text: text.trim().to_string(),
                city: city_id,
                source: "rest".into(),
                added_at,
            })
            .collect();
        let cities: Vec<City> = city.into_iter().collect();
        let report = self.store.ingest(&cities, &posts).map_err(ApiError::from)?;
        *self
            .last_ingest
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let city = self
            .store
            .labels()
            .city(city_id)
            .map_err(|e| ApiError::Internal {
                detail: e.to_string(),
            })?
            .ok_or(ApiError::CityNotFound { id: city_id })?;
        Ok(IngestResponse {
            city,
            examples_added: report.posts_added,
            duplicates: report.duplicates,
            generation: self.store.current_generation(),
            searchable_after_ms: report.searchable_after_s * 1000.0,
        })
    }

    /// Whether the store knows this city.
    pub fn knows_city(&self, id: CityId) -> Result<bool, ApiError> {
        self.store
            .labels()
            .city(id)
            .map(|c| c.is_some())
            .map_err(|e| ApiError::Internal {
                detail: e.to_string(),
            })
    }

    /// Starts a retrain job on its own thread; refused (409) while one runs.
    pub fn start_retrain(&self, request: &RetrainRequest) -> Result<Job, ApiError> {
        let mut options = RetrainOptions {
            threads: self.retrain_threads,
            ..RetrainOptions::default()
        };
        if let Some(epochs) = request.epochs {
            options.train.epochs = epochs;
        }
        if let Some(min_steps) = request.min_steps {
            options.train.min_steps = min_steps;
        }
        if let Some(margin) = request.gate_margin {
            if !(margin.is_finite() && margin >= 0.0) {
                return Err(ApiError::invalid(
                    "gate_margin",
                    format!("must be a finite number >= 0, got {margin}"),
                ));
            }
            options.gate_margin = margin;
        }
        start_retrain_job(&self.store, &self.jobs, options)
    }

    /// The job with this id.
    pub fn job(&self, id: u64) -> Option<Job> {
        self.jobs.get(id)
    }

    fn start_policy(&self, policy: RetrainPolicy) {
        let store: Weak<LiveStore> = Arc::downgrade(&self.store);
        let jobs = Arc::clone(&self.jobs);
        let last_ingest = Arc::clone(&self.last_ingest);
        let threads = self.retrain_threads;
        let spawned = std::thread::Builder::new()
            .name("contrastgeo-retrain-policy".into())
            .spawn(move || loop {
                std::thread::sleep(crate::engine::live::POLICY_POLL);
                let Some(store) = store.upgrade() else {
                    return;
                };
                let quiet = last_ingest
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .elapsed()
                    >= policy.quiet;
                if !quiet || store.is_retraining() {
                    continue;
                }
                let built = store
                    .versions()
                    .ok()
                    .and_then(|v| v.into_iter().find(|g| g.current))
                    .map_or(0, |g| g.manifest.label_watermark);
                let new = store
                    .labels()
                    .labels_after(built)
                    .filter(|l| matches!(l, Ok((_, contrastgeo_index::Label::Post(_)))))
                    .count() as u64;
                if new >= policy.min_new_labels {
                    tracing::info!(new, "retrain policy: enough new labels and a quiet period");
                    let options = RetrainOptions {
                        threads,
                        ..RetrainOptions::default()
                    };
                    if let Err(e) = start_retrain_job(&store, &jobs, options) {
                        tracing::warn!("retrain policy could not start a retrain: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the retrain policy thread: {e}");
        }
    }
}

fn start_retrain_job(
    store: &Arc<LiveStore>,
    jobs: &Arc<Jobs>,
    options: RetrainOptions,
) -> Result<Job, ApiError> {
    // Checked and registered under the jobs lock: the store only takes its retrain lock once the job's
    // thread runs, so a second request arriving before that must find this job running here.
    let mut registry = jobs.jobs.lock().unwrap_or_else(PoisonError::into_inner);
    let running = registry
        .values()
        .any(|j| j.kind == "retrain" && j.state == JobState::Running);
    if running || store.is_retraining() {
        return Err(ApiError::Conflict {
            detail: "a retrain is already running; follow it with GET /v1/jobs/{id}".into(),
        });
    }
    let id = jobs.next.fetch_add(1, Ordering::Relaxed) + 1;
    let job = Job {
        id,
        kind: "retrain".into(),
        state: JobState::Running,
        progress: None,
        report: None,
        error: None,
        started_at: now_unix(),
        finished_at: None,
    };
    registry.insert(id, job.clone());
    drop(registry);
    let (store, jobs_for_thread) = (Arc::clone(store), Arc::clone(jobs));
    let spawned = std::thread::Builder::new()
        .name(format!("contrastgeo-retrain-{id}"))
        .spawn(move || {
            let outcome = store.retrain(&options, &|progress: RetrainProgress| {
                let value = serde_json::to_value(&progress).ok();
                jobs_for_thread.update(id, |job| job.progress = value);
            });
            finish(&jobs_for_thread, id, outcome);
        });
    if let Err(e) = spawned {
        let detail = format!("cannot start the retrain thread: {e}");
        jobs.update(id, |job| {
            job.state = JobState::Failed;
            job.error = Some(detail.clone());
            job.finished_at = Some(now_unix());
        });
        return Err(ApiError::Internal { detail });
    }
    Ok(job)
}

fn finish(jobs: &Jobs, id: u64, outcome: Result<RetrainReport, EngineError>) {
    jobs.update(id, |job| {
        job.finished_at = Some(now_unix());
        match outcome {
            Ok(report) => {
                job.state = if report.swapped {
                    JobState::Succeeded
                } else {
                    JobState::Rejected
                };
                job.report = serde_json::to_value(&report).ok();
            }
            Err(error) => {
                job.state = JobState::Failed;
                job.error = Some(error.to_string());
            }
        }
    });
}

/// Parses a JSON body into `T`, naming the field at fault (`city.lat`, `examples[2]`).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let field = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::MalformedJson {
                detail: inner.to_string(),
            }
        } else {
            let field = if field == "." {
                "body".to_string()
            } else {
                field
            };
            ApiError::wrong_type(field, inner.to_string())
        }
    })
}

/// The city record of a `POST /v1/cities` body, or a problem naming the field at fault.
pub fn city_of(request: &AddCityRequest) -> Result<City, ApiError> {
    request.city.to_city().map_err(|why| {
        let field = ["lat", "lon", "name"]
            .iter()
            .find(|f| why.contains(&format!("`city.{f}`")))
            .map_or_else(
                || {
                    if why.contains("coordinates") {
                        "city.lat".to_string()
                    } else {
                        "city".to_string()
                    }
                },
                |f| format!("city.{f}"),
            );
        ApiError::invalid(field, why)
    })
}
