//! Prometheus metrics of the service, served as text at `GET /metrics`.
//!
//! Why: an operator behind a load balancer needs to see load (requests, queue depth, batch sizes), speed
//! (latency histograms) and failures (problems by status and type) per replica. Requests are counted by route
//! *pattern* (`/v1/cities/{id}`), never by raw path, so unknown paths cannot blow up the label space.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use super::batcher::BatchObserver;
use super::problem::ProblemSlug;

/// The route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// The service's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    problems: IntCounterVec,
    request_posts: Histogram,
    batch_posts: Histogram,
    batch_seconds: Histogram,
    queue_depth: IntGauge,
    /// A follower's lag, registered on its first scrape (a writer exports none).
    follow: std::sync::OnceLock<Result<FollowGauges, String>>,
}

struct FollowGauges {
    lag_labels: IntGauge,
    lag_seconds: prometheus::Gauge,
    generation: IntGauge,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("contrastgeo".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from request to response, by route",
            )
            .buckets(exponential_buckets(0.000_5, 2.0, 16)?),
            &["route"],
        )?;
        let problems = IntCounterVec::new(
            Opts::new(
                "http_problems_total",
                "Error responses (problem+json) by status and problem type",
            ),
            &["status", "type"],
        )?;
        let request_posts = Histogram::with_opts(
            HistogramOpts::new("locate_request_posts", "Posts per POST /v1/locate request")
                .buckets(exponential_buckets(1.0, 2.0, 11)?),
        )?;
        let batch_posts = Histogram::with_opts(
            HistogramOpts::new(
                "inference_batch_posts",
                "Posts per inference batch (one Engine::locate call)",
            )
            .buckets(exponential_buckets(1.0, 2.0, 11)?),
        )?;
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "inference_batch_duration_seconds",
                "Time of one inference batch",
            )
            .buckets(exponential_buckets(0.001, 2.0, 15)?),
        )?;
        let queue_depth = IntGauge::new(
            "inference_queue_posts",
            "Posts waiting in the inference queue",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(problems.clone()))?;
        registry.register(Box::new(request_posts.clone()))?;
        registry.register(Box::new(batch_posts.clone()))?;
        registry.register(Box::new(batch_seconds.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            problems,
            request_posts,
            batch_posts,
            batch_seconds,
            queue_depth,
            follow: std::sync::OnceLock::new(),
        })
    }

    /// Sets a follower's lag gauges (`contrastgeo_follow_lag_labels`, `_lag_seconds`, `_generation`).
    pub fn observe_follow(&self, status: &crate::replication::FollowStatus) {
        let gauges = self.follow.get_or_init(|| {
            let register = || -> Result<FollowGauges, prometheus::Error> {
                let gauges = FollowGauges {
                    lag_labels: IntGauge::new(
                        "follow_lag_labels",
                        "Labels the writer published that this follower has not applied",
                    )?,
                    lag_seconds: prometheus::Gauge::new(
                        "follow_lag_seconds",
                        "Seconds since this follower was last caught up with its writer",
                    )?,
                    generation: IntGauge::new("follow_generation", "The generation served")?,
                };
                self.registry
                    .register(Box::new(gauges.lag_labels.clone()))?;
                self.registry
                    .register(Box::new(gauges.lag_seconds.clone()))?;
                self.registry
                    .register(Box::new(gauges.generation.clone()))?;
                Ok(gauges)
            };
            register().map_err(|e| e.to_string())
        });
        match gauges {
            Ok(gauges) => {
                gauges.lag_labels.set(status.lag_labels as i64);
                gauges.lag_seconds.set(status.lag_s);
                gauges.generation.set(status.generation as i64);
            }
            Err(error) => tracing::warn!("follower metrics unavailable: {error}"),
        }
    }

    /// Records one answered request.
    pub fn observe_request(
        &self,
        route: &str,
        method: &str,
        status: u16,
        seconds: f64,
        problem: Option<&str>,
    ) {
        let status = status.to_string();
        self.requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.latency.with_label_values(&[route]).observe(seconds);
        if let Some(slug) = problem {
            self.problems
                .with_label_values(&[status.as_str(), slug])
                .inc();
        }
    }

    /// Records the number of posts of a locate request.
    pub fn observe_request_posts(&self, posts: usize) {
        self.request_posts.observe(posts as f64);
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

impl BatchObserver for Metrics {
    fn queue_depth(&self, posts: usize) {
        self.queue_depth.set(posts as i64);
    }

    fn batch_done(&self, posts: usize, _jobs: usize, seconds: f64) {
        self.batch_posts.observe(posts as f64);
        self.batch_seconds.observe(seconds);
    }
}

/// Middleware: times every request and counts it by route pattern, method, status and problem type.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let route = req.match_pattern().unwrap_or_else(|| UNMATCHED.to_string());
    let method = req.method().to_string();
    let response = next.call(req).await;
    if let Some(metrics) = metrics {
        let seconds = started.elapsed().as_secs_f64();
        match &response {
            Ok(res) => {
                let problem = res
                    .response()
                    .extensions()
                    .get::<ProblemSlug>()
                    .map(|s| s.0);
                metrics.observe_request(&route, &method, res.status().as_u16(), seconds, problem);
            }
            Err(error) => {
                let status = error.as_response_error().status_code().as_u16();
                metrics.observe_request(&route, &method, status, seconds, Some("other"));
            }
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_text_has_every_family_with_its_labels() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_request("/v1/locate", "POST", 200, 0.01, None);
        metrics.observe_request("/v1/locate", "POST", 422, 0.001, Some("invalid-value"));
        metrics.observe_request_posts(3);
        metrics.queue_depth(5);
        metrics.batch_done(8, 2, 0.05);
        let text = metrics.render().unwrap();
        for needle in [
            r#"contrastgeo_http_requests_total{method="POST",route="/v1/locate",status="200"} 1"#,
            r#"contrastgeo_http_problems_total{status="422",type="invalid-value"} 1"#,
            "contrastgeo_http_request_duration_seconds_bucket",
            "contrastgeo_locate_request_posts_count 1",
            "contrastgeo_inference_batch_posts_sum 8",
            "contrastgeo_inference_batch_duration_seconds_count 1",
            "contrastgeo_inference_queue_posts 5",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
