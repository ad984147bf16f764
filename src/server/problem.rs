//! Every error the service answers with, as an RFC 9457 problem (`application/problem+json`).
//!
//! Why one module: a client should get the same shape for every failure, whichever layer found it (actix's
//! extractors, the JSON parser, validation, the queue, the engine), and a new error must not slip out as a
//! plain-text 500. [`ApiError::kind`] maps each variant to its status, type and title in one exhaustive
//! `match` with no wildcard arm, so adding a variant fails to compile until it has a status. actix's own
//! errors are converted too: extractor failures by the `from_*` constructors (installed as the extractors' error
//! handlers), and any other plain-text error response by [`plain_errors_to_problems`].

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{web, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};

use crate::engine::EngineError;
use crate::geo::CityId;
use crate::model::ModelError;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Prefix of the problem `type` URIs (a URN: stable, not dereferenced).
const TYPE_PREFIX: &str = "urn:contrastgeo:problem:";

/// An RFC 9457 problem details object, with the field at fault and, in a batch, the post's index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Problem {
    /// URI naming the kind of problem (`urn:contrastgeo:problem:<slug>`).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, naming the field at fault.
    pub detail: String,
    /// The request field at fault (`text`, `posts[2].top_k`, the query parameter `limit`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// In a batch answer: the position of the post this problem is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// What kind of failure an [`ApiError`] is: its HTTP status, problem type slug and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemKind {
    /// The HTTP status.
    pub status: StatusCode,
    /// Last part of the problem `type` URI.
    pub slug: &'static str,
    /// The problem's title.
    pub title: &'static str,
}

/// Every error a request can end with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("the request body is not valid JSON: {detail}")]
    MalformedJson {
        /// The parser's message (with line and column).
        detail: String,
    },
    /// A field (or query or path parameter) has the wrong type, is missing or is not allowed.
    #[error("`{field}`: {detail}")]
    WrongType {
        /// The field at fault.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// A field has the right type but a value out of range (empty text, text too long, `top_k` 0, ...).
    #[error("`{field}`: {detail}")]
    InvalidValue {
        /// The field at fault.
        field: String,
        /// What is wrong and what is allowed.
        detail: String,
    },
    /// No city has this id in the served store.
    #[error("no city with id {id} in the served store")]
    CityNotFound {
        /// The id asked for.
        id: CityId,
    },
    /// No route has this path.
    #[error("no route {path}; see /openapi.json for the routes")]
    RouteNotFound {
        /// The request path.
        path: String,
    },
    /// The route exists but not for this method.
    #[error("{path} does not accept {method}; it accepts {}", allowed.join(", "))]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
        /// The methods the route accepts.
        allowed: Vec<String>,
    },
    /// The body is larger than the configured limit.
    #[error("the request body is larger than the limit{}", limit.map(|l| format!(" of {l} bytes")).unwrap_or_default())]
    PayloadTooLarge {
        /// The limit in bytes, when known.
        limit: Option<usize>,
    },
    /// The body is not declared as JSON.
    #[error("the request body must be `application/json`, not {}", found.as_deref().map_or("a body without Content-Type".to_string(), |c| format!("`{c}`")))]
    UnsupportedMediaType {
        /// The request's content type, when it had one.
        found: Option<String>,
    },
    /// A write route was called without the right API key.
    #[error("{reason}")]
    Unauthorized {
        /// Why the key was refused.
        reason: String,
    },
    /// The request conflicts with work in progress (a retrain while another runs).
    #[error("{detail}")]
    Conflict {
        /// What is in the way.
        detail: String,
    },
    /// No job has this id.
    #[error("no job with id {id} (jobs are kept until the server restarts)")]
    JobNotFound {
        /// The id asked for.
        id: u64,
    },
    /// The served store takes no writes: a read-only replica, or a plain index without a label log.
    #[error("{reason}")]
    WritesUnavailable {
        /// Why.
        reason: String,
    },
    /// The queue in front of the model is full.
    #[error(
        "the server is overloaded ({queued} posts already queued); retry after {retry_after_s} s"
    )]
    Overloaded {
        /// Posts waiting when the request was refused.
        queued: usize,
        /// Seconds the client should wait (the `Retry-After` header).
        retry_after_s: u64,
    },
    /// The model or the store is still loading.
    #[error("the model and store are still loading; retry after {retry_after_s} s (GET /readyz says when ready)")]
    NotReady {
        /// Seconds the client should wait (the `Retry-After` header).
        retry_after_s: u64,
    },
    /// The server is shutting down and takes no new work.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The request was not answered within the configured time.
    #[error("the request was not answered within {timeout_ms} ms; the server may be overloaded")]
    Timeout {
        /// The per-request timeout.
        timeout_ms: u64,
    },
    /// A bug or a store failure.
    #[error("internal error: {detail}")]
    Internal {
        /// What failed.
        detail: String,
    },
    /// An error response from outside this module (one of actix's own), kept with its status.
    #[error("{detail}")]
    Unexpected {
        /// Its status.
        status: StatusCode,
        /// What actix said.
        detail: String,
    },
}

impl ApiError {
    /// A [`ApiError::WrongType`] for `field`.
    pub fn wrong_type(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::WrongType {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// An [`ApiError::InvalidValue`] for `field`.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::InvalidValue {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// The status, type and title of this error: the one place that decides them.
    pub fn kind(&self) -> ProblemKind {
        let kind = |status, slug, title| ProblemKind {
            status,
            slug,
            title,
        };
        match self {
            Self::MalformedJson { .. } => {
                kind(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON")
            }
            Self::WrongType { .. } => kind(
                StatusCode::BAD_REQUEST,
                "wrong-type",
                "A field has the wrong type",
            ),
            Self::InvalidValue { .. } => kind(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-value",
                "A field's value is not allowed",
            ),
            Self::CityNotFound { .. } => {
                kind(StatusCode::NOT_FOUND, "city-not-found", "Unknown city")
            }
            Self::RouteNotFound { .. } => {
                kind(StatusCode::NOT_FOUND, "route-not-found", "Unknown route")
            }
            Self::MethodNotAllowed { .. } => kind(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Self::PayloadTooLarge { .. } => kind(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            Self::UnsupportedMediaType { .. } => kind(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported content type",
            ),
            Self::Unauthorized { .. } => kind(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Missing or wrong API key",
            ),
            Self::Conflict { .. } => kind(StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::JobNotFound { .. } => kind(StatusCode::NOT_FOUND, "job-not-found", "Unknown job"),
            Self::WritesUnavailable { .. } => kind(
                StatusCode::FORBIDDEN,
                "writes-unavailable",
                "This server takes no writes",
            ),
            Self::Overloaded { .. } => kind(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Server overloaded",
            ),
            Self::NotReady { .. } => kind(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-ready",
                "Server not ready",
            ),
            Self::ShuttingDown => kind(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "Server shutting down",
            ),
            Self::Timeout { .. } => {
                kind(StatusCode::GATEWAY_TIMEOUT, "timeout", "Request timed out")
            }
            Self::Internal { .. } => kind(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
            Self::Unexpected { status, .. } => kind(*status, "http-error", "HTTP error"),
        }
    }

    /// The field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::WrongType { field, .. } | Self::InvalidValue { field, .. } => Some(field),
            Self::CityNotFound { .. } | Self::JobNotFound { .. } => Some("id"),
            Self::MalformedJson { .. }
            | Self::RouteNotFound { .. }
            | Self::MethodNotAllowed { .. }
            | Self::PayloadTooLarge { .. }
            | Self::UnsupportedMediaType { .. }
            | Self::Unauthorized { .. }
            | Self::Conflict { .. }
            | Self::WritesUnavailable { .. }
            | Self::Overloaded { .. }
            | Self::NotReady { .. }
            | Self::ShuttingDown
            | Self::Timeout { .. }
            | Self::Internal { .. }
            | Self::Unexpected { .. } => None,
        }
    }

    /// The problem object of this error.
    pub fn problem(&self) -> Problem {
        let kind = self.kind();
        Problem {
            problem_type: format!("{TYPE_PREFIX}{}", kind.slug),
            title: kind.title.into(),
            status: kind.status.as_u16(),
            detail: self.to_string(),
            field: self.field().map(Into::into),
            index: None,
        }
    }

    /// The problem of post `index` of a batch, with its field named inside the batch (`posts[2].text`).
    pub fn problem_at(&self, index: usize) -> Problem {
        let mut problem = self.problem();
        problem.index = Some(index);
        problem
    }
}

/// The problem type slug an error response carries, for the metrics middleware.
#[derive(Debug, Clone, Copy)]
pub struct ProblemSlug(pub &'static str);

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.kind().status
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let problem = self.problem();
        let mut response = HttpResponse::build(self.status_code());
        response.content_type(PROBLEM_JSON);
        match self {
            Self::Overloaded { retry_after_s, .. } | Self::NotReady { retry_after_s } => {
                response.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
            }
            Self::ShuttingDown => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            Self::MethodNotAllowed { allowed, .. } => {
                response.insert_header((header::ALLOW, allowed.join(", ")));
            }
            Self::Unauthorized { .. } => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        let mut response = response.json(problem);
        response
            .extensions_mut()
            .insert(ProblemSlug(self.kind().slug));
        // `json` sets `application/json`; a problem is `application/problem+json`.
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        // Exhaustive on purpose: a new engine error must be given its status here.
        match error {
            EngineError::Model(ModelError::EmptyText { .. }) => {
                Self::invalid("text", "the text is empty or whitespace only")
            }
            EngineError::EmptyAuthor { .. } => {
                Self::invalid("posts", "an author needs at least one post")
            }
            EngineError::Busy(detail) => Self::Conflict { detail },
            error @ (EngineError::StoreBusy { .. } | EngineError::DuplicateCity(_)) => {
                Self::Conflict {
                    detail: error.to_string(),
                }
            }
            error @ (EngineError::Model(_)
            | EngineError::Index(_)
            | EngineError::NoStore { .. }
            | EngineError::EmptyStore { .. }
            | EngineError::ModelMismatch { .. }
            | EngineError::UnknownSupportCity { .. }
            | EngineError::NoCities
            | EngineError::VectorCount { .. }
            | EngineError::NoCandidates { .. }
            | EngineError::InvalidConfig(_)
            // Stored on this server but not yet published to its replicas: a retry stores nothing
            // twice and publishes what is missing.
            | EngineError::Publish(_)
            | EngineError::Io { .. }) => Self::Internal {
                detail: error.to_string(),
            },
        }
    }
}

impl ApiError {
    /// The problem for a failure of actix's JSON extractor (`web::Json`, configured by `JsonConfig`).
    pub fn from_json_payload(error: JsonPayloadError) -> Self {
        match error {
            JsonPayloadError::OverflowKnownLength { limit, .. }
            | JsonPayloadError::Overflow { limit } => Self::PayloadTooLarge { limit: Some(limit) },
            JsonPayloadError::ContentType => Self::UnsupportedMediaType { found: None },
            JsonPayloadError::Deserialize(e) if e.is_data() => {
                Self::wrong_type("body", e.to_string())
            }
            JsonPayloadError::Deserialize(e) => Self::MalformedJson {
                detail: e.to_string(),
            },
            JsonPayloadError::Payload(e) => Self::MalformedJson {
                detail: e.to_string(),
            },
            other => Self::Internal {
                detail: other.to_string(),
            },
        }
    }

    /// The problem for a failure of actix's query-string extractor (`web::Query`).
    pub fn from_query(error: QueryPayloadError) -> Self {
        Self::wrong_type("query", error.to_string())
    }

    /// The problem for a failure of actix's path extractor (`web::Path`).
    pub fn from_path(error: PathError) -> Self {
        Self::wrong_type("path", error.to_string())
    }
}

/// Configures actix's extractors (`web::Json`, `web::Query`, `web::Path`, `web::Bytes`) with the body limit
/// and with error handlers that answer problems instead of actix's plain-text errors.
pub fn extractor_errors_as_problems(config: &mut web::ServiceConfig, body_limit: usize) {
    config
        .app_data(web::PayloadConfig::new(body_limit))
        .app_data(
            web::JsonConfig::default()
                .limit(body_limit)
                .error_handler(|e, _| ApiError::from_json_payload(e).into()),
        )
        .app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::from_query(e).into()))
        .app_data(web::PathConfig::default().error_handler(|e, _| ApiError::from_path(e).into()));
}

/// Error-handler middleware hook: an error response that is not already a problem (one of actix's
/// plain-text errors) is replaced by a problem with the same status.
pub fn plain_errors_to_problems<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let path = res.request().path().to_string();
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::RouteNotFound { path },
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit: None },
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType { found: None },
        status => ApiError::Unexpected {
            status,
            detail: status
                .canonical_reason()
                .unwrap_or("HTTP error")
                .to_string(),
        },
    };
    let (request, _) = res.into_parts();
    let response = ServiceResponse::new(request, error.error_response());
    Ok(ErrorHandlerResponse::Response(
        response.map_into_right_body(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::middleware::ErrorHandlers;
    use actix_web::{test, App};

    #[derive(Debug, Deserialize)]
    struct Thing {
        #[allow(dead_code)]
        n: u32,
    }

    async fn take_json(_: web::Json<Thing>) -> HttpResponse {
        HttpResponse::NoContent().finish()
    }

    async fn take_query(_: web::Query<Thing>) -> HttpResponse {
        HttpResponse::NoContent().finish()
    }

    async fn take_path(_: web::Path<u32>) -> HttpResponse {
        HttpResponse::NoContent().finish()
    }

    async fn take_bytes(_: web::Bytes) -> HttpResponse {
        HttpResponse::NoContent().finish()
    }

    async fn plain_error() -> HttpResponse {
        HttpResponse::BadGateway().body("upstream down")
    }

    /// (status, content type, problem type) of each request.
    async fn answers(requests: Vec<test::TestRequest>) -> Vec<(u16, String, String)> {
        let app = test::init_service(
            App::new()
                .configure(|c| extractor_errors_as_problems(c, 32))
                .wrap(ErrorHandlers::new().default_handler(plain_errors_to_problems))
                .route("/json", web::post().to(take_json))
                .route("/query", web::get().to(take_query))
                .route("/path/{n}", web::get().to(take_path))
                .route("/bytes", web::post().to(take_bytes))
                .route("/plain", web::get().to(plain_error)),
        )
        .await;
        let mut out = Vec::new();
        for request in requests {
            let res = test::call_service(&app, request.to_request()).await;
            let status = res.status().as_u16();
            let content_type = res
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            let body: serde_json::Value =
                serde_json::from_slice(&test::read_body(res).await).unwrap_or_default();
            let slug = body["type"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches(TYPE_PREFIX)
                .to_string();
            out.push((status, content_type, slug));
        }
        out
    }

    #[test]
    fn actix_extractor_and_plain_errors_become_problems() {
        let json = |body: &str, content_type: &str| {
            test::TestRequest::post()
                .uri("/json")
                .insert_header((header::CONTENT_TYPE, content_type.to_string()))
                .set_payload(body.to_string())
        };
        let got = actix_web::rt::System::new().block_on(answers(vec![
            json(r#"{"n": 1}"#, "application/json"),
            json(r#"{"n": "#, "application/json"),
            json(r#"{"n": "one"}"#, "application/json"),
            json(r#"{"n": 1}"#, "text/plain"),
            json(
                &format!(r#"{{"n": 1, "pad": "{}"}}"#, "x".repeat(64)),
                "application/json",
            ),
            test::TestRequest::get().uri("/query?n=x"),
            test::TestRequest::get().uri("/path/minus"),
            test::TestRequest::get().uri("/plain"),
            test::TestRequest::post()
                .uri("/bytes")
                .set_payload("x".repeat(64)),
        ]));
        let expected = [
            (204, "", ""),
            (400, PROBLEM_JSON, "malformed-json"),
            (400, PROBLEM_JSON, "wrong-type"),
            (415, PROBLEM_JSON, "unsupported-media-type"),
            (413, PROBLEM_JSON, "payload-too-large"),
            (400, PROBLEM_JSON, "wrong-type"),
            (400, PROBLEM_JSON, "wrong-type"),
            (502, PROBLEM_JSON, "http-error"),
            (413, PROBLEM_JSON, "payload-too-large"),
        ];
        assert_eq!(got.len(), expected.len());
        for (got, (status, content_type, slug)) in got.iter().zip(expected) {
            assert_eq!(
                (got.0, got.1.as_str(), got.2.as_str()),
                (status, content_type, slug)
            );
        }
    }

    #[test]
    fn problems_carry_their_status_headers_and_field() {
        let cases = [
            (
                ApiError::Overloaded {
                    queued: 3,
                    retry_after_s: 7,
                },
                503,
                Some((header::RETRY_AFTER, "7")),
            ),
            (
                ApiError::NotReady { retry_after_s: 2 },
                503,
                Some((header::RETRY_AFTER, "2")),
            ),
            (
                ApiError::MethodNotAllowed {
                    method: "GET".into(),
                    path: "/v1/locate".into(),
                    allowed: vec!["POST".into()],
                },
                405,
                Some((header::ALLOW, "POST")),
            ),
            (
                ApiError::Unauthorized {
                    reason: "no key".into(),
                },
                401,
                Some((header::WWW_AUTHENTICATE, "Bearer")),
            ),
            (ApiError::Timeout { timeout_ms: 5 }, 504, None),
            (ApiError::invalid("posts[3].text", "empty"), 422, None),
        ];
        for (error, status, header) in cases {
            let response = error.error_response();
            assert_eq!(response.status().as_u16(), status, "{error}");
            assert_eq!(
                response.headers().get(header::CONTENT_TYPE).unwrap(),
                PROBLEM_JSON
            );
            if let Some((name, value)) = header {
                assert_eq!(response.headers().get(name).unwrap(), value, "{error}");
            }
        }
        let problem = ApiError::invalid("posts[3].text", "empty").problem_at(3);
        assert_eq!(problem.field.as_deref(), Some("posts[3].text"));
        assert_eq!(problem.index, Some(3));
        assert_eq!(problem.status, 422);
        assert!(problem.detail.contains("posts[3].text"));
        assert_eq!(
            ApiError::CityNotFound { id: 9 }.problem().field.as_deref(),
            Some("id")
        );
    }
}
