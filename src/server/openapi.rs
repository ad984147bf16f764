//! The OpenAPI 3.1 document of the service, generated from the route table and the Rust wire types.
//!
//! Why generated: the schemas come from the same types the handlers serialize (through `schemars`, which the
//! record schemas in `schema/` already use; OpenAPI 3.1 schemas are JSON Schema 2020-12), and the paths come
//! from [`ROUTES`], the table the server registers. The committed `schema/openapi.json` is checked against
//! [`document`] by a test, so a route or a response shape cannot change without the file changing too.
//! Regenerate it with `CONTRASTGEO_UPDATE_SCHEMAS=1 cargo test --release --test server`.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::api::{CityDetail, CityList, CitySearch, Health, LocateBody, LocateReply, Readiness};
use super::problem::{Problem, PROBLEM_JSON};
use super::routes::{Operation, Route, ROUTES};
use super::writes::{
    AddCityRequest, AddExamplesRequest, IngestResponse, Job, JobAccepted, ModelList,
    RetrainRequest, RollbackRequest, RollbackResponse,
};

/// The OpenAPI document of every route in [`ROUTES`].
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths
            .entry(route.path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[route.method.to_ascii_lowercase()] = operation(route, &mut generator);
    }
    let schemas = generator.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "contrastgeo",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Where was this post written? Locates social-media posts to cities from a \
                vector index of city prompts and labelled support posts. Errors are RFC 9457 problems \
                (application/problem+json) naming the field at fault.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" }
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {
                    "type": "http", "scheme": "bearer",
                    "description": "The key of --api-key-file, as `Authorization: Bearer KEY` (or `X-API-Key: KEY`)."
                }
            }
        }
    })
}

/// The document as the server serves it and the committed file holds it (pretty, newline-terminated).
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

/// The OpenAPI operation of one route.
fn operation(route: &Route, g: &mut SchemaGenerator) -> Value {
    let problem = schema::<Problem>(g);
    let responses = |ok: Value, errors: &[u16]| responses(ok, errors, &problem);
    match route.operation {
        Operation::Locate => json!({
            "operationId": "locate",
            "summary": "Locate one post, or a batch of posts",
            "description": "One post (`text`, optional `id` echoed back, optional `top_k` from 1 to the \
                server's shortlist size) gets the `locate` command's record for it. A batch (`posts`, at \
                most the configured batch limit) gets `results`, one per post in order: a located post, or \
                the problem with that post (with its `index`) while the others are answered.",
            "requestBody": {
                "required": true,
                "content": { "application/json": { "schema": schema::<LocateBody>(g) } }
            },
            "responses": responses(ok_json::<LocateReply>(g, "The answer"), &[400, 413, 415, 422, 500, 503, 504]),
        }),
        Operation::SearchCities => json!({
            "operationId": "searchCities",
            "summary": "Cities of the served store whose name starts with a prefix",
            "parameters": [
                {
                    "name": "q", "in": "query", "required": false,
                    "description": "Name prefix, ignoring case; empty or absent lists every city.",
                    "schema": { "type": "string" }
                },
                {
                    "name": "limit", "in": "query", "required": false,
                    "description": "Most cities returned.",
                    "schema": {
                        "type": "integer", "minimum": 1, "maximum": CitySearch::MAX_LIMIT,
                        "default": CitySearch::DEFAULT_LIMIT
                    }
                }
            ],
            "responses": responses(ok_json::<CityList>(g, "Matching cities in name order"), &[400, 422, 503]),
        }),
        Operation::GetCity => json!({
            "operationId": "getCity",
            "summary": "One city of the served store",
            "parameters": [{
                "name": "id", "in": "path", "required": true,
                "description": "GeoNames id.",
                "schema": { "type": "integer", "format": "uint64", "minimum": 0 }
            }],
            "responses": responses(ok_json::<CityDetail>(g, "The city"), &[400, 404, 503]),
        }),
        Operation::Health => json!({
            "operationId": "health",
            "summary": "Liveness: the process answers HTTP",
            "responses": responses(ok_json::<Health>(g, "Alive"), &[]),
        }),
        Operation::Ready => json!({
            "operationId": "ready",
            "summary": "Readiness: the store is open and the model loaded (503 while starting)",
            "responses": responses(ok_json::<Readiness>(g, "Ready"), &[503]),
        }),
        Operation::Metrics => json!({
            "operationId": "metrics",
            "summary": "Prometheus metrics (text exposition format)",
            "responses": responses(json!({
                "description": "Metrics",
                "content": { "text/plain": { "schema": { "type": "string" } } }
            }), &[]),
        }),
        Operation::AddCity => json!({
            "operationId": "addCity",
            "summary": "Add a city (new, or a gazetteer city's record) with example posts; searchable at once",
            "description": "Needs the API key (`Authorization: Bearer KEY` or `X-API-Key`). The city and its \
                examples go to the store's durable label log, then into the live index: a post like the \
                examples is answered with the city as soon as this returns. A city without `id` gets one \
                derived from its name, region and country.",
            "security": [{ "apiKey": [] }],
            "requestBody": {
                "required": true,
                "content": { "application/json": { "schema": schema::<AddCityRequest>(g) } }
            },
            "responses": responses_with("201", ok_json::<IngestResponse>(g, "Stored and searchable"), &[400, 401, 403, 409, 413, 415, 422, 500, 503], &problem),
        }),
        Operation::AddExamples => json!({
            "operationId": "addExamples",
            "summary": "Add example posts to a city of the store; searchable at once",
            "security": [{ "apiKey": [] }],
            "parameters": [{
                "name": "id", "in": "path", "required": true,
                "description": "The city's id.",
                "schema": { "type": "integer", "format": "uint64", "minimum": 0 }
            }],
            "requestBody": {
                "required": true,
                "content": { "application/json": { "schema": schema::<AddExamplesRequest>(g) } }
            },
            "responses": responses(ok_json::<IngestResponse>(g, "Stored and searchable"), &[400, 401, 403, 404, 413, 415, 422, 500, 503]),
        }),
        Operation::Retrain => json!({
            "operationId": "retrain",
            "summary": "Start a retrain on every stored label; the new model goes live only if it passes the gate",
            "security": [{ "apiKey": [] }],
            "requestBody": {
                "required": false,
                "content": { "application/json": { "schema": schema::<RetrainRequest>(g) } }
            },
            "responses": responses_with("202", ok_json::<JobAccepted>(g, "Started; follow GET /v1/jobs/{id}"), &[400, 401, 403, 409, 415, 422, 503], &problem),
        }),
        Operation::GetJob => json!({
            "operationId": "getJob",
            "summary": "A job's state, progress and report",
            "parameters": [{
                "name": "id", "in": "path", "required": true,
                "schema": { "type": "integer", "format": "uint64", "minimum": 0 }
            }],
            "responses": responses(ok_json::<Job>(g, "The job"), &[400, 403, 404, 503]),
        }),
        Operation::ListModels => json!({
            "operationId": "listModels",
            "summary": "The store's model versions (generations), oldest first",
            "responses": responses(ok_json::<ModelList>(g, "The versions"), &[403, 503]),
        }),
        Operation::Rollback => json!({
            "operationId": "rollback",
            "summary": "Make an earlier model version live again",
            "security": [{ "apiKey": [] }],
            "requestBody": {
                "required": true,
                "content": { "application/json": { "schema": schema::<RollbackRequest>(g) } }
            },
            "responses": responses(ok_json::<RollbackResponse>(g, "Rolled back"), &[400, 401, 403, 409, 415, 422, 503]),
        }),
        Operation::OpenApi => json!({
            "operationId": "openapi",
            "summary": "This document",
            "responses": responses(json!({
                "description": "The OpenAPI 3.1 document",
                "content": { "application/json": { "schema": { "type": "object" } } }
            }), &[]),
        }),
    }
}

/// A reference to `T`'s schema (registered under `components/schemas`).
fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Value {
    g.subschema_for::<T>().to_value()
}

/// A 200 response with a JSON body of type `T`.
fn ok_json<T: JsonSchema>(g: &mut SchemaGenerator, description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema::<T>(g) } }
    })
}

/// The responses object: `ok` for 200, then a problem response per error status.
fn responses(ok: Value, errors: &[u16], problem: &Value) -> Value {
    responses_with("200", ok, errors, problem)
}

/// The responses object with `ok` under another success status (201, 202).
fn responses_with(status: &str, ok: Value, errors: &[u16], problem: &Value) -> Value {
    let mut responses = Map::new();
    responses.insert(status.into(), ok);
    for &status in errors {
        responses.insert(
            status.to_string(),
            json!({
                "description": error_description(status),
                "content": { (PROBLEM_JSON): { "schema": problem } }
            }),
        );
    }
    Value::Object(responses)
}

/// What an error status means on this API.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Malformed JSON, or a field or parameter of the wrong type (named in `field`)",
        401 => "Missing or wrong API key",
        403 => "This server takes no writes (a read-only replica, or a plain index without a label log)",
        409 => "Conflicts with work in progress (a retrain is running)",
        404 => "Unknown city, job or route",
        405 => "Method not allowed (see the `Allow` header)",
        413 => "Request body over the size limit",
        415 => "Body not `application/json`",
        422 => "A value out of range: empty or too long text, `top_k` or `limit` out of range, too many posts",
        500 => "Internal error",
        503 => "Overloaded, starting or shutting down (see `Retry-After`)",
        504 => "Not answered within the request timeout",
        _ => "Error",
    }
}
