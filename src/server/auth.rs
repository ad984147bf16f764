//! The API-key guard of the write routes.
//!
//! Why: reads are open, but the routes that change a store (add a city, add support posts, retrain: the
//! ingest issue) must be refused without the operator's key. The key is read once from `--api-key-file`;
//! a client sends it as `Authorization: Bearer KEY` or `X-API-Key: KEY`. A write scope is guarded by wrapping
//! it in [`require_api_key`] (`web::scope("/v1/...").wrap(from_fn(require_api_key))`); with no key file
//! configured every write is refused, and a read-only replica does not mount write routes at all.

use std::path::Path;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

use super::problem::ApiError;

/// The header that may carry the key instead of `Authorization: Bearer`.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Who may call write routes: the configured key, or nobody.
#[derive(Clone)]
pub struct WriteAccess {
    key: Option<String>,
}

impl std::fmt::Debug for WriteAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("WriteAccess")
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error("cannot read the API key file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no key.
    #[error("the API key file {0} is empty; write the key on its first line")]
    Empty(std::path::PathBuf),
}

impl WriteAccess {
    /// Writes allowed with `key`.
    pub fn with_key(key: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()),
        }
    }

    /// Every write refused.
    pub fn disabled() -> Self {
        Self { key: None }
    }

    /// Reads the key from the first non-empty line of `path` (surrounding whitespace is ignored).
    pub fn from_file(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let key = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| KeyFileError::Empty(path.to_path_buf()))?;
        Ok(Self::with_key(key))
    }

    /// Whether writes can be allowed at all.
    pub fn is_enabled(&self) -> bool {
        self.key.is_some()
    }

    /// Accepts the request's headers when they carry the key.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.key else {
            return Err(ApiError::Unauthorized {
                reason: "write routes are disabled: the server was started without --api-key-file"
                    .into(),
            });
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let plain = headers
            .get(API_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        match bearer.or(plain) {
            Some(given) if constant_time_eq(given.as_bytes(), key.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized {
                reason: "the API key is wrong".into(),
            }),
            None => Err(ApiError::Unauthorized {
                reason: "this route needs the API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`"
                    .into(),
            }),
        }
    }
}

/// Compares two byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// Middleware of write scopes: 401 problem unless the request carries the key of the app's [`WriteAccess`]
/// (registered with `app_data(web::Data::new(access))`; without one, every write is refused).
pub async fn require_api_key(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let access = req
        .app_data::<web::Data<WriteAccess>>()
        .map_or_else(WriteAccess::disabled, |a| a.get_ref().clone());
    match access.check(req.headers()) {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(refused) => Ok(req
            .into_response(refused.error_response())
            .map_into_right_body()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::middleware::from_fn;
    use actix_web::{test, App, HttpResponse};

    async fn status_of(access: Option<WriteAccess>, headers: &[(&str, &str)]) -> (u16, String) {
        let mut app = App::new().service(
            web::scope("/v1/write")
                .wrap(from_fn(require_api_key))
                .route("/thing", web::post().to(HttpResponse::NoContent)),
        );
        if let Some(access) = access {
            app = app.app_data(web::Data::new(access));
        }
        let app = test::init_service(app).await;
        let mut req = test::TestRequest::post().uri("/v1/write/thing");
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        let res = test::call_service(&app, req.to_request()).await;
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, content_type)
    }

    #[test]
    fn write_routes_need_the_key_in_either_header() {
        actix_web::rt::System::new().block_on(write_routes_need_the_key());
    }

    async fn write_routes_need_the_key() {
        let key = || Some(WriteAccess::with_key("s3cret"));
        let problem = (401, "application/problem+json".to_string());
        assert_eq!(status_of(key(), &[]).await, problem);
        assert_eq!(
            status_of(key(), &[("authorization", "Bearer wrong")]).await,
            problem
        );
        assert_eq!(status_of(key(), &[("x-api-key", "s3cre")]).await, problem);
        assert_eq!(
            status_of(key(), &[("authorization", "Bearer s3cret")])
                .await
                .0,
            204
        );
        assert_eq!(status_of(key(), &[("x-api-key", "s3cret")]).await.0, 204);
        // No key configured: writes are disabled whatever is sent.
        assert_eq!(
            status_of(Some(WriteAccess::disabled()), &[("x-api-key", "s3cret")]).await,
            problem
        );
        assert_eq!(status_of(None, &[("x-api-key", "")]).await, problem);
    }

    #[test]
    fn the_key_file_gives_its_first_non_empty_line_and_an_empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "\n  abc123  \nignored\n").unwrap();
        let access = WriteAccess::from_file(&path).unwrap();
        assert!(access.is_enabled());
        assert!(!format!("{access:?}").contains("abc123"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            header::HeaderValue::from_static("Bearer abc123"),
        );
        assert!(access.check(&headers).is_ok());
        std::fs::write(&path, " \n").unwrap();
        assert!(matches!(
            WriteAccess::from_file(&path),
            Err(KeyFileError::Empty(_))
        ));
        assert!(WriteAccess::from_file(&dir.path().join("missing")).is_err());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
