//! The route table and its handlers.
//!
//! Why one table: [`ROUTES`] is read both to register the actix resources ([`configure`]) and to write the
//! OpenAPI document ([`super::openapi`]), so the served routes and the documented routes are the same list.
//! Handlers are thin: parse (with [`super::api`]), call the service, answer or map the error.

use std::collections::BTreeSet;

use actix_web::http::header::{self, ContentType};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::api::{self, CityDetail, CityList, CitySearch, Health, Readiness};
use super::auth::WriteAccess;
use super::page;
use super::problem::ApiError;
use super::service::AppState;
use super::writes;

/// What a route does; each has one handler and one OpenAPI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST /v1/locate`: one post or a batch.
    Locate,
    /// `GET /v1/cities?q=&limit=`: prefix search by name.
    SearchCities,
    /// `GET /v1/cities/{id}`: one city.
    GetCity,
    /// `GET /healthz`: liveness.
    Health,
    /// `GET /readyz`: readiness.
    Ready,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /openapi.json`: this API's description.
    OpenApi,
    /// `POST /v1/cities`: add a city with example posts (API key).
    AddCity,
    /// `POST /v1/cities/{id}/examples`: add example posts to a city (API key).
    AddExamples,
    /// `POST /v1/retrain`: start a retrain job (API key).
    Retrain,
    /// `GET /v1/jobs/{id}`: a job's state and progress.
    GetJob,
    /// `GET /v1/models`: the store's model versions.
    ListModels,
    /// `POST /v1/models/rollback`: make an earlier version live (API key).
    Rollback,
    /// `GET /` and `GET /page/...`: the analyst's web page, a static file embedded in the binary
    /// ([`super::page`]); not an API route, documented as such.
    Page,
}

/// One route: method, path (with `{param}` segments, as actix and OpenAPI both write them) and operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path pattern.
    pub path: &'static str,
    /// What it does.
    pub operation: Operation,
}

/// Every route the server answers.
pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/v1/locate",
        operation: Operation::Locate,
    },
    Route {
        method: "GET",
        path: "/v1/cities",
        operation: Operation::SearchCities,
    },
    Route {
        method: "GET",
        path: "/v1/cities/{id}",
        operation: Operation::GetCity,
    },
    Route {
        method: "GET",
        path: "/healthz",
        operation: Operation::Health,
    },
    Route {
        method: "GET",
        path: "/readyz",
        operation: Operation::Ready,
    },
    Route {
        method: "GET",
        path: "/metrics",
        operation: Operation::Metrics,
    },
    Route {
        method: "GET",
        path: "/openapi.json",
        operation: Operation::OpenApi,
    },
    Route {
        method: "POST",
        path: "/v1/cities",
        operation: Operation::AddCity,
    },
    Route {
        method: "POST",
        path: "/v1/cities/{id}/examples",
        operation: Operation::AddExamples,
    },
    Route {
        method: "POST",
        path: "/v1/retrain",
        operation: Operation::Retrain,
    },
    Route {
        method: "GET",
        path: "/v1/jobs/{id}",
        operation: Operation::GetJob,
    },
    Route {
        method: "GET",
        path: "/v1/models",
        operation: Operation::ListModels,
    },
    Route {
        method: "POST",
        path: "/v1/models/rollback",
        operation: Operation::Rollback,
    },
    // The web page: one row per file of `page::PAGE_FILES` (a unit test checks they match).
    Route {
        method: "GET",
        path: "/",
        operation: Operation::Page,
    },
    Route {
        method: "GET",
        path: "/page/app.js",
        operation: Operation::Page,
    },
    Route {
        method: "GET",
        path: "/page/page.css",
        operation: Operation::Page,
    },
    Route {
        method: "GET",
        path: "/page/countries-110m.json",
        operation: Operation::Page,
    },
    Route {
        method: "GET",
        path: "/page/NOTICE",
        operation: Operation::Page,
    },
];

/// Registers one resource per path of [`ROUTES`], with a 405 problem for the methods it does not take.
pub fn configure(config: &mut web::ServiceConfig) {
    let paths: BTreeSet<&str> = ROUTES.iter().map(|r| r.path).collect();
    for path in paths {
        let mut resource = web::resource(path).default_service(web::to(method_not_allowed));
        for route in ROUTES.iter().filter(|r| r.path == path) {
            let method = Method::from_bytes(route.method.as_bytes()).unwrap_or(Method::GET);
            let on = web::method(method);
            resource = match route.operation {
                Operation::Locate => resource.route(on.to(locate)),
                Operation::SearchCities => resource.route(on.to(search_cities)),
                Operation::GetCity => resource.route(on.to(get_city)),
                Operation::Health => resource.route(on.to(health)),
                Operation::Ready => resource.route(on.to(ready)),
                Operation::Metrics => resource.route(on.to(metrics)),
                Operation::OpenApi => resource.route(on.to(openapi)),
                Operation::AddCity => resource.route(on.to(add_city)),
                Operation::AddExamples => resource.route(on.to(add_examples)),
                Operation::Retrain => resource.route(on.to(retrain)),
                Operation::GetJob => resource.route(on.to(get_job)),
                Operation::ListModels => resource.route(on.to(list_models)),
                Operation::Rollback => resource.route(on.to(rollback)),
                Operation::Page => resource.route(on.to(page::serve)),
            };
        }
        config.service(resource);
    }
}

/// `POST /v1/locate`.
async fn locate(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    api::require_json(req.headers())?;
    let body = read_body(&req, payload, state.config().body_limit_bytes).await?;
    let request = api::parse_locate(&body, state.limits())?;
    let posts = match &request {
        api::ParsedLocate::Single(_) => 1,
        api::ParsedLocate::Batch(posts) | api::ParsedLocate::ByAuthor(posts) => posts.len(),
    };
    state.metrics().observe_request_posts(posts);
    let reply = state.ready()?.answer(request).await?;
    Ok(HttpResponse::Ok().json(reply))
}

/// Reads the body up to `limit` bytes (refusing a larger declared length before reading).
async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::PayloadTooLarge { limit: Some(limit) });
    }
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => Err(ApiError::MalformedJson {
            detail: format!("the body could not be read: {error}"),
        }),
        Err(_too_large) => Err(ApiError::PayloadTooLarge { limit: Some(limit) }),
    }
}

/// `GET /v1/cities?q=PREFIX&limit=N`.
async fn search_cities(
    state: web::Data<AppState>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let search = CitySearch::from_query(&query)?;
    let snapshot = state.ready()?.engine().snapshot();
    let cities = snapshot
        .cities()
        .search_prefix(&search.q, search.limit)
        .into_iter()
        .cloned()
        .collect();
    Ok(HttpResponse::Ok().json(CityList { cities }))
}

/// `GET /v1/cities/{id}`.
async fn get_city(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = api::parse_city_id(&id)?;
    let snapshot = state.ready()?.engine().snapshot();
    let cities = snapshot.cities();
    let entry = cities.get(id).ok_or(ApiError::CityNotFound { id })?;
    Ok(HttpResponse::Ok().json(CityDetail {
        city: entry.city.clone(),
        has_prompt: entry.prompt.is_some(),
        support_posts: entry.supports.len(),
    }))
}

/// `GET /healthz`: the process answers HTTP.
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

/// `GET /readyz`: 200 once the store and model are loaded, 503 before.
async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let service = state.ready()?;
    let snapshot = service.engine().snapshot();
    Ok(HttpResponse::Ok().json(Readiness {
        status: "ready".into(),
        store: snapshot.dir().display().to_string(),
        model: snapshot.model().config().model_id.clone(),
        cities: snapshot.cities().len(),
        read_only: service.read_only(),
        follow: service.follower().map(|f| f.status()),
    }))
}

/// `GET /metrics`.
async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Some(follower) = state.ready().ok().and_then(|s| s.follower()) {
        state.metrics().observe_follow(&follower.status());
    }
    let text = state.metrics().render().map_err(|e| ApiError::Internal {
        detail: e.to_string(),
    })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

/// `GET /openapi.json`.
async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(state.openapi().to_string())
}

/// Checks the API key and the content type, and reads a write route's JSON body.
async fn write_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T, ApiError> {
    req.app_data::<web::Data<WriteAccess>>().map_or_else(
        || WriteAccess::disabled().check(req.headers()),
        |a| a.check(req.headers()),
    )?;
    let body = read_body(req, payload, state.config().body_limit_bytes).await?;
    if body.is_empty() {
        // A bodiless POST (e.g. `curl -X POST .../v1/retrain`) means "all defaults".
        return writes::parse_body(b"{}");
    }
    api::require_json(req.headers())?;
    writes::parse_body(&body)
}

/// Runs a blocking store call off the async workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(call).await.map_err(|e| ApiError::Internal {
        detail: format!("a store call failed to run: {e}"),
    })?
}

/// The write side of the loaded service, shared with a blocking call.
fn writer(state: &web::Data<AppState>) -> Result<web::Data<AppState>, ApiError> {
    state.ready()?.writer()?;
    Ok(state.clone())
}

/// `POST /v1/cities`: 201 with what was stored.
async fn add_city(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let request: writes::AddCityRequest = write_body(&state, &req, payload).await?;
    let city = writes::city_of(&request)?;
    writes::Writer::check_examples(&request.examples, state.config().max_text_chars)?;
    let state = writer(&state)?;
    let stored = blocking(move || {
        let writer = state.ready()?.writer()?;
        writer.ingest(Some(city.clone()), city.id, &request.examples)
    })
    .await?;
    Ok(HttpResponse::Created().json(stored))
}

/// `POST /v1/cities/{id}/examples`: 200 with what was stored.
async fn add_examples(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let request: writes::AddExamplesRequest = write_body(&state, &req, payload).await?;
    let id = api::parse_city_id(&id)?;
    if request.examples.is_empty() {
        return Err(ApiError::invalid(
            "examples",
            "give at least one example post",
        ));
    }
    writes::Writer::check_examples(&request.examples, state.config().max_text_chars)?;
    let state = writer(&state)?;
    let stored = blocking(move || {
        let writer = state.ready()?.writer()?;
        if !writer.knows_city(id)? {
            return Err(ApiError::CityNotFound { id });
        }
        writer.ingest(None, id, &request.examples)
    })
    .await?;
    Ok(HttpResponse::Ok().json(stored))
}

/// `POST /v1/retrain`: 202 with the job to follow.
async fn retrain(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let request: writes::RetrainRequest = write_body(&state, &req, payload).await?;
    let job = state.ready()?.writer()?.start_retrain(&request)?;
    Ok(HttpResponse::Accepted().json(writes::JobAccepted { job }))
}

/// `GET /v1/jobs/{id}`.
async fn get_job(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::wrong_type("id", format!("a job id is an unsigned integer, got {id:?}"))
    })?;
    let job = state
        .ready()?
        .writer()?
        .job(id)
        .ok_or(ApiError::JobNotFound { id })?;
    Ok(HttpResponse::Ok().json(job))
}

/// `GET /v1/models`.
async fn list_models(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let state = writer(&state)?;
    let list = blocking(move || {
        let store = state.ready()?.writer()?.store();
        let models = store.versions().map_err(ApiError::from)?;
        Ok(writes::ModelList {
            current: store.current_generation(),
            models,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(list))
}

/// `POST /v1/models/rollback`.
async fn rollback(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let request: writes::RollbackRequest = write_body(&state, &req, payload).await?;
    let state = writer(&state)?;
    let done = blocking(move || {
        let store = state.ready()?.writer()?.store();
        if store.is_retraining() {
            return Err(ApiError::Conflict {
                detail: "a retrain is running; roll back when it has finished".into(),
            });
        }
        let known = store
            .versions()
            .map_err(ApiError::from)?
            .iter()
            .any(|v| v.manifest.id == request.to);
        if !known {
            return Err(ApiError::invalid(
                "to",
                format!(
                    "there is no model version {} (GET /v1/models lists them)",
                    request.to
                ),
            ));
        }
        let manifest = store.rollback(request.to).map_err(ApiError::from)?;
        Ok(writes::RollbackResponse {
            current: manifest.id,
            model_id: manifest.model_id,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(done))
}

/// The default service of a known path: 405 with the methods it takes.
async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let pattern = req.match_pattern().unwrap_or_default();
    let allowed = ROUTES
        .iter()
        .filter(|r| r.path == pattern)
        .map(|r| r.method.to_string())
        .collect();
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.path().to_string(),
        allowed,
    })
}

/// The app's default service: 404 for any path outside [`ROUTES`].
pub async fn route_not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound {
        path: req.path().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_file_has_a_route_and_every_page_route_a_file() {
        let routed: BTreeSet<&str> = ROUTES
            .iter()
            .filter(|r| r.operation == Operation::Page)
            .map(|r| r.path)
            .collect();
        let files: BTreeSet<&str> = page::PAGE_FILES.iter().map(|f| f.path).collect();
        assert_eq!(routed, files);
    }
}
