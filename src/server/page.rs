//! The analyst's web page, served at `/` by `contrastgeo serve`.
//!
//! Why it is shaped this way:
//! - The page is a client of the REST routes and nothing else: it calls `/v1/locate`, `/v1/cities`, the
//!   write routes and the job and model routes from its own JS, so every rule (validation, ranking,
//!   authorisation) lives once, in the API, and the page only shows the API's answers and problems.
//! - Its files are embedded in the binary (`include_str!` / `include_bytes!`): a single binary serves it,
//!   with nothing fetched from the internet at run time (the map outline is a vendored world-atlas TopoJSON,
//!   drawn by the page's own small equirectangular projection; licences in `page/vendor/NOTICE`).
//! - Each file is a row of the route table ([`super::routes::ROUTES`], operation [`Operation::Page`]), so it
//!   is registered, counted in the metrics and listed in the OpenAPI document (tagged `page`, as non-API
//!   static files) like every other route.
//! - Answers carry a strong `ETag` (revalidated with `Cache-Control: no-cache`, so a new binary's page is
//!   picked up at once), `X-Content-Type-Options: nosniff`, and on the HTML a Content-Security-Policy
//!   allowing this origin only.
//!
//! [`Operation::Page`]: super::routes::Operation::Page

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

use super::problem::ApiError;

/// One static file of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFile {
    /// The path it is served at.
    pub path: &'static str,
    /// Its media type.
    pub content_type: &'static str,
    /// What it is, for the OpenAPI document.
    pub summary: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// Every file of the page.
pub const PAGE_FILES: &[PageFile] = &[
    PageFile {
        path: "/",
        content_type: "text/html; charset=utf-8",
        summary: "The analyst's web page: try a post, add a city, retrain",
        body: include_bytes!("page/index.html"),
    },
    PageFile {
        path: "/page/app.js",
        content_type: "text/javascript; charset=utf-8",
        summary: "The page's script",
        body: include_bytes!("page/app.js"),
    },
    PageFile {
        path: "/page/page.css",
        content_type: "text/css; charset=utf-8",
        summary: "The page's style sheet",
        body: include_bytes!("page/page.css"),
    },
    PageFile {
        path: "/page/countries-110m.json",
        content_type: "application/json",
        summary: "The map outline: Natural Earth 1:110m countries as TopoJSON (world-atlas 2.0.2)",
        body: include_bytes!("page/vendor/countries-110m.json"),
    },
    PageFile {
        path: "/page/NOTICE",
        content_type: "text/plain; charset=utf-8",
        summary: "Sources and licences of the page's vendored files",
        body: include_bytes!("page/vendor/NOTICE"),
    },
];

/// The Content-Security-Policy of the HTML: scripts, styles, data and connections from this origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// The page file served at `path`.
pub fn file(path: &str) -> Option<&'static PageFile> {
    PAGE_FILES.iter().find(|f| f.path == path)
}

/// The strong entity tag of a page file (a CRC-32 of its bytes, computed once).
fn etag(file: &PageFile) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        PAGE_FILES
            .iter()
            .map(|f| format!("\"{:08x}-{:x}\"", crc32fast::hash(f.body), f.body.len()))
            .collect()
    });
    PAGE_FILES
        .iter()
        .position(|f| f.path == file.path)
        .and_then(|i| tags.get(i))
        .map_or("", String::as_str)
}

/// Whether the request's `If-None-Match` names `tag` (or `*`).
fn not_modified(req: &HttpRequest, tag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

/// `GET` of a page file: the file, or 304 when the client's copy is current.
pub async fn serve(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let pattern = req
        .match_pattern()
        .unwrap_or_else(|| req.path().to_string());
    let file = file(&pattern).ok_or_else(|| ApiError::RouteNotFound {
        path: req.path().to_string(),
    })?;
    let tag = etag(file);
    let current = not_modified(&req, tag);
    let mut response = if current {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if file.content_type.starts_with("text/html") {
        response.insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ));
    }
    if current {
        return Ok(response.finish());
    }
    Ok(response
        .insert_header((header::CONTENT_TYPE, file.content_type))
        .body(file.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn every_file_has_its_own_path_and_a_body() {
        for (i, f) in PAGE_FILES.iter().enumerate() {
            assert!(!f.body.is_empty(), "{}", f.path);
            assert!(
                PAGE_FILES[..i].iter().all(|g| g.path != f.path),
                "{} twice",
                f.path
            );
            assert!(etag(f).starts_with('"'));
        }
        assert_eq!(
            file("/").map(|f| f.content_type),
            Some(PAGE_FILES[0].content_type)
        );
        assert!(file("/nope").is_none());
    }

    #[test]
    fn the_page_names_only_files_that_are_served() {
        let html = std::str::from_utf8(PAGE_FILES[0].body).unwrap();
        let script = std::str::from_utf8(file("/page/app.js").unwrap().body).unwrap();
        for text in [html, script] {
            for reference in text.split(['"', '\'']).filter(|s| s.starts_with("/page/")) {
                assert!(file(reference).is_some(), "{reference} is not served");
            }
        }
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn if_none_match_is_compared_with_the_tag() {
        let tag = etag(&PAGE_FILES[1]);
        let req = TestRequest::default()
            .insert_header((header::IF_NONE_MATCH, format!("\"x\", W/{tag}")))
            .to_http_request();
        assert!(not_modified(&req, tag));
        let req = TestRequest::default()
            .insert_header((header::IF_NONE_MATCH, "\"x\""))
            .to_http_request();
        assert!(!not_modified(&req, tag));
    }
}
