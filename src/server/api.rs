//! The wire types of the REST API and the parsing and validation of request bodies.
//!
//! Why a module of its own: the handlers stay thin (parse, call, map), and the types here are the single
//! source of the OpenAPI document ([`super::openapi`]) and of the answers, which flatten the same
//! [`Answer`] the `locate` command writes, so the HTTP record and the CLI record cannot drift apart.
//!
//! Bodies are parsed in two steps: bytes to a JSON value (a syntax error is a 400 naming the position), then
//! each post to its typed request (a type error is a 400 naming the field, e.g. `posts[2].top_k`). A batch is
//! parsed post by post, so a bad post gets its own problem and the others are still answered.

use actix_web::http::header::{self, HeaderMap};
use serde::{Deserialize, Serialize};

use super::problem::{ApiError, Problem};
use crate::engine::{Answer, AuthorAnswer};
use crate::geo::City;

/// The limits a request body is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most posts in a batch request.
    pub batch_limit: usize,
    /// Most characters in a post's text.
    pub max_text_chars: usize,
    /// Largest shortlist a request may ask for (the engine's `top_k`).
    pub max_top_k: usize,
}

/// One post to locate: the body of a single `POST /v1/locate`, or an entry of a batch's `posts`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocateRequest {
    /// The post's text (not empty, at most the configured number of characters).
    pub text: String,
    /// Any JSON value; echoed in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<serde_json::Value>,
    /// Cities in the answer's shortlist, from 1 to the engine's `top_k` (its default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub top_k: Option<usize>,
    /// The author's free-text profile location ("Austin, TX"), when known: evidence beside the text (the
    /// engine's `profile_weight`); at most the configured number of characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_location: Option<String>,
    /// The author (an opaque id): a batch with `"group_by": "user"` answers once per author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The body of a batch `POST /v1/locate`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchLocateRequest {
    /// The posts, at most the configured batch limit.
    #[schemars(length(min = 1))]
    pub posts: Vec<LocateRequest>,
    /// `"user"`: answer once per author (each post then needs its `user`) with an
    /// [`AuthorsLocateResponse`], instead of once per post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<GroupBy>,
}

/// What a batch can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The post's `user`.
    User,
}

/// One author's answer in an [`AuthorsLocateResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LocatedAuthor {
    /// The author.
    pub user: String,
    /// Positions in the request's `posts` of the author's posts (`weighing_posts[].index` counts within
    /// this list).
    pub posts: Vec<usize>,
    /// The answer from all of the author's posts.
    #[serde(flatten)]
    pub answer: AuthorAnswer,
}

/// The answer to a batch with `"group_by": "user"`: one entry per author (in order of first appearance), and
/// the problems of the posts that could not be used (with their `index`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuthorsLocateResponse {
    /// One answer per author.
    pub authors: Vec<LocatedAuthor>,
    /// The refused posts; the others were used.
    pub problems: Vec<Problem>,
}

/// The body of `POST /v1/locate`: one post, or a batch of posts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum LocateBody {
    /// A batch: answered with a [`BatchLocateResponse`].
    Batch(BatchLocateRequest),
    /// One post: answered with a [`LocatedPost`].
    Single(LocateRequest),
}

/// A parsed `POST /v1/locate` body.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedLocate {
    /// One valid post.
    Single(LocateRequest),
    /// The posts of a batch, each valid or with its own error.
    Batch(Vec<Result<LocateRequest, ApiError>>),
    /// The posts of a batch to answer per author (each valid post has a `user`).
    ByAuthor(Vec<Result<LocateRequest, ApiError>>),
}

/// The answer for one post: the `locate` command's record without its input `line`, with the request's `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LocatedPost {
    /// The request's `id`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<serde_json::Value>,
    /// The answer (the shortlist `top_k` truncated to the request's `top_k`).
    #[serde(flatten)]
    pub answer: Answer,
}

/// The answer for one post of a batch: a located post, or the problem with that post (with its `index`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum BatchItem {
    /// The post was answered.
    Located(LocatedPost),
    /// The post was refused; the other posts are still answered.
    Problem(Problem),
}

/// The answer to a batch: one item per post, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BatchLocateResponse {
    /// One entry per post of the request, in order.
    pub results: Vec<BatchItem>,
}

/// The answer to `POST /v1/locate`: a [`LocatedPost`] for one post, a [`BatchLocateResponse`] for a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum LocateReply {
    /// The answer to a batch grouped by author.
    Authors(AuthorsLocateResponse),
    /// The answer to a batch.
    Batch(BatchLocateResponse),
    /// The answer to one post.
    Single(LocatedPost),
}

/// The query of `GET /v1/cities`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CitySearch {
    /// Name prefix, matched ignoring case; empty lists every city.
    pub q: String,
    /// Most cities returned.
    pub limit: usize,
}

impl CitySearch {
    /// Cities returned when the query has no `limit`.
    pub const DEFAULT_LIMIT: usize = 20;
    /// Largest `limit` allowed.
    pub const MAX_LIMIT: usize = 1000;

    /// Reads `q` and `limit` from the query parameters; any other parameter is refused.
    pub fn from_query(params: &[(String, String)]) -> Result<Self, ApiError> {
        let mut search = Self {
            q: String::new(),
            limit: Self::DEFAULT_LIMIT,
        };
        for (name, value) in params {
            match name.as_str() {
                "q" => search.q = value.clone(),
                "limit" => {
                    search.limit = value.trim().parse().map_err(|_| {
                        ApiError::wrong_type(
                            "limit",
                            format!("expected a positive integer, got {value:?}"),
                        )
                    })?;
                    if !(1..=Self::MAX_LIMIT).contains(&search.limit) {
                        return Err(ApiError::invalid(
                            "limit",
                            format!(
                                "limit must be between 1 and {}, got {}",
                                Self::MAX_LIMIT,
                                search.limit
                            ),
                        ));
                    }
                }
                other => {
                    return Err(ApiError::wrong_type(
                        other,
                        "unknown query parameter; this route takes `q` and `limit`",
                    ))
                }
            }
        }
        Ok(search)
    }
}

/// Parses the `{id}` of `/v1/cities/{id}`.
pub fn parse_city_id(id: &str) -> Result<crate::geo::CityId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::wrong_type(
            "id",
            format!("a city id is a GeoNames id (an unsigned integer), got {id:?}"),
        )
    })
}

/// The answer to `GET /v1/cities`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CityList {
    /// Matching cities in name order (ties: larger population first).
    pub cities: Vec<City>,
}

/// The answer to `GET /v1/cities/{id}`: the city record and what the store holds for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CityDetail {
    /// The city record.
    #[serde(flatten)]
    pub city: City,
    /// Whether its location prompt is indexed.
    pub has_prompt: bool,
    /// How many of its support posts are indexed.
    pub support_posts: usize,
}

/// The answer to `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Health {
    /// Always `ok`: the process serves HTTP.
    pub status: String,
}

/// The answer to `GET /readyz` once the store and model are loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Readiness {
    /// Always `ready`.
    pub status: String,
    /// The store directory being served (a private copy in read-only mode).
    pub store: String,
    /// The id of the model answering.
    pub model: String,
    /// Cities in the store.
    pub cities: usize,
    /// Whether the server serves a read-only copy.
    pub read_only: bool,
    /// A follower's distance from its writer (`contrastgeo serve --follow`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<crate::replication::FollowStatus>,
}

/// Whether the request declares a JSON body (`application/json` or `application/<x>+json`).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let found = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let essence = found
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        Some(c) if c.starts_with("application/") && c.ends_with("+json") => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType { found }),
    }
}

/// Parses and validates a `POST /v1/locate` body.
pub fn parse_locate(body: &[u8], limits: &RequestLimits) -> Result<ParsedLocate, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson {
            detail: e.to_string(),
        })?;
    let serde_json::Value::Object(mut object) = value else {
        return Err(ApiError::wrong_type(
            "body",
            "expected a JSON object with `text` (one post) or `posts` (a batch)",
        ));
    };
    let Some(posts) = object.remove("posts") else {
        let post = typed::<LocateRequest>(serde_json::Value::Object(object), "")?;
        return validate(post, "", limits).map(ParsedLocate::Single);
    };
    let group_by = match object.remove("group_by") {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(
            serde_json::from_value::<GroupBy>(value)
                .map_err(|e| ApiError::wrong_type("group_by", e.to_string()))?,
        ),
    };
    if let Some(other) = object.keys().next() {
        return Err(ApiError::wrong_type(
            other.as_str(),
            "a batch takes only `posts` and `group_by` (each post has its own `id` and `top_k`)",
        ));
    }
    let serde_json::Value::Array(posts) = posts else {
        return Err(ApiError::wrong_type("posts", "expected an array of posts"));
    };
    if posts.is_empty() {
        return Err(ApiError::invalid(
            "posts",
            "a batch needs at least one post",
        ));
    }
    if posts.len() > limits.batch_limit {
        return Err(ApiError::invalid(
            "posts",
            format!(
                "a batch holds at most {} posts; this one has {}",
                limits.batch_limit,
                posts.len()
            ),
        ));
    }
    let posts = posts.into_iter().enumerate().map(|(i, post)| {
        let at = format!("posts[{i}].");
        typed::<LocateRequest>(post, &at).and_then(|post| validate(post, &at, limits))
    });
    Ok(match group_by {
        None => ParsedLocate::Batch(posts.collect()),
        Some(GroupBy::User) => ParsedLocate::ByAuthor(
            posts
                .enumerate()
                .map(|(i, post)| {
                    post.and_then(|post| match post.user.as_deref().map(str::trim) {
                        Some(user) if !user.is_empty() => Ok(post),
                        _ => Err(ApiError::invalid(
                            format!("posts[{i}].user"),
                            "with \"group_by\": \"user\" every post needs its `user`",
                        )),
                    })
                })
                .collect(),
        ),
    })
}

/// Deserializes `value`, naming the field at fault (prefixed by `at`) in the error.
fn typed<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    at: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // An unknown or missing field is named in the message, at the level of the object holding it.
        let field = match path.as_str() {
            "." => unknown_or_missing_field(&inner).unwrap_or_default(),
            p => p.to_string(),
        };
        let field = format!("{at}{field}");
        let field = field.trim_end_matches('.').to_string();
        let field = if field.is_empty() {
            "body".into()
        } else {
            field
        };
        ApiError::wrong_type(field, inner)
    })
}

/// The field named by serde's "unknown field `x`" or "missing field `x`" message.
fn unknown_or_missing_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_string())
}

/// Checks the values of a well-typed post.
fn validate(
    post: LocateRequest,
    at: &str,
    limits: &RequestLimits,
) -> Result<LocateRequest, ApiError> {
    if post.text.trim().is_empty() {
        return Err(ApiError::invalid(
            format!("{at}text"),
            "the text is empty or whitespace only",
        ));
    }
    let chars = post.text.chars().count();
    if chars > limits.max_text_chars {
        return Err(ApiError::invalid(
            format!("{at}text"),
            format!(
                "the text has {chars} characters; the limit is {}",
                limits.max_text_chars
            ),
        ));
    }
    if let Some(location) = &post.user_location {
        let chars = location.chars().count();
        if chars > limits.max_text_chars {
            return Err(ApiError::invalid(
                format!("{at}user_location"),
                format!(
                    "the profile location has {chars} characters; the limit is {}",
                    limits.max_text_chars
                ),
            ));
        }
    }
    if let Some(top_k) = post.top_k {
        if !(1..=limits.max_top_k).contains(&top_k) {
            return Err(ApiError::invalid(
                format!("{at}top_k"),
                format!(
                    "top_k must be between 1 and {} (the served shortlist size), got {top_k}",
                    limits.max_top_k
                ),
            ));
        }
    }
    Ok(post)
}

impl LocatedPost {
    /// The answer to `request`, its shortlist truncated to the requested `top_k`.
    pub fn new(request: &LocateRequest, mut answer: Answer) -> Self {
        if let Some(top_k) = request.top_k {
            answer.top_k.truncate(top_k);
        }
        Self {
            id: request.id.clone(),
            answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    const LIMITS: RequestLimits = RequestLimits {
        batch_limit: 3,
        max_text_chars: 10,
        max_top_k: 5,
    };

    fn parse(body: &str) -> Result<ParsedLocate, ApiError> {
        parse_locate(body.as_bytes(), &LIMITS)
    }

    fn field_of(result: Result<ParsedLocate, ApiError>) -> (u16, String) {
        let error = result.unwrap_err();
        (
            error.kind().status.as_u16(),
            error.field().unwrap_or_default().to_string(),
        )
    }

    #[test]
    fn a_single_post_parses_with_its_id_and_top_k() {
        let parsed = parse(r#"{"text": "hi there", "id": 7, "top_k": 2}"#).unwrap();
        assert_eq!(
            parsed,
            ParsedLocate::Single(LocateRequest {
                text: "hi there".into(),
                id: Some(serde_json::json!(7)),
                top_k: Some(2),
                user_location: None,
                user: None,
            })
        );
    }

    #[test]
    fn errors_name_the_field_and_have_the_right_status() {
        assert!(matches!(
            parse(r#"{"text": "#),
            Err(ApiError::MalformedJson { .. })
        ));
        assert_eq!(field_of(parse(r#"{"text": 5}"#)), (400, "text".into()));
        assert_eq!(field_of(parse(r#"{"top_k": 1}"#)), (400, "text".into()));
        assert_eq!(
            field_of(parse(r#"{"text": "a", "colour": 1}"#)),
            (400, "colour".into())
        );
        assert_eq!(field_of(parse(r#"[1]"#)), (400, "body".into()));
        assert_eq!(field_of(parse(r#"{"text": "  "}"#)), (422, "text".into()));
        assert_eq!(
            field_of(parse(r#"{"text": "ééééééééééé"}"#)),
            (422, "text".into())
        );
        assert!(parse(r#"{"text": "éééééééééé"}"#).is_ok(), "10 characters");
        assert_eq!(
            field_of(parse(r#"{"text": "a", "top_k": 0}"#)),
            (422, "top_k".into())
        );
        assert_eq!(
            field_of(parse(r#"{"text": "a", "top_k": 6}"#)),
            (422, "top_k".into())
        );
        assert_eq!(
            field_of(parse(r#"{"text": "a", "top_k": -1}"#)),
            (400, "top_k".into())
        );
        assert_eq!(field_of(parse(r#"{"posts": 1}"#)), (400, "posts".into()));
        assert_eq!(field_of(parse(r#"{"posts": []}"#)), (422, "posts".into()));
        assert_eq!(
            field_of(parse(r#"{"posts": [{"text":"a"}], "top_k": 1}"#)),
            (400, "top_k".into())
        );
        assert_eq!(
            field_of(parse(
                r#"{"posts": [{"text":"a"},{"text":"b"},{"text":"c"},{"text":"d"}]}"#
            )),
            (422, "posts".into())
        );
    }

    #[test]
    fn a_batch_keeps_each_bad_post_as_its_own_error() {
        let parsed =
            parse(r#"{"posts": [{"text": "ok"}, {"text": 3}, {"text": "", "id": "x"}]}"#).unwrap();
        let ParsedLocate::Batch(posts) = parsed else {
            panic!("a batch")
        };
        assert_eq!(posts[0].as_ref().unwrap().text, "ok");
        let second = posts[1].as_ref().unwrap_err();
        assert_eq!(
            (second.kind().status.as_u16(), second.field()),
            (400, Some("posts[1].text"))
        );
        let third = posts[2].as_ref().unwrap_err();
        assert_eq!(
            (third.kind().status.as_u16(), third.field()),
            (422, Some("posts[2].text"))
        );
        let missing = parse(r#"{"posts": [{"id": 1}]}"#).unwrap();
        let ParsedLocate::Batch(posts) = missing else {
            panic!("a batch")
        };
        assert_eq!(
            posts[0].as_ref().unwrap_err().field(),
            Some("posts[0].text")
        );
    }

    #[test]
    fn city_queries_default_and_check_their_limit() {
        let q = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect();
            CitySearch::from_query(&pairs)
        };
        assert_eq!(
            q(&[]).unwrap(),
            CitySearch {
                q: String::new(),
                limit: 20
            }
        );
        assert_eq!(q(&[("q", "Sea"), ("limit", "3")]).unwrap().limit, 3);
        let status = |r: Result<CitySearch, ApiError>| {
            let e = r.unwrap_err();
            (e.kind().status.as_u16(), e.field().map(String::from))
        };
        assert_eq!(status(q(&[("limit", "x")])), (400, Some("limit".into())));
        assert_eq!(status(q(&[("limit", "0")])), (422, Some("limit".into())));
        assert_eq!(status(q(&[("limit", "1001")])), (422, Some("limit".into())));
        assert_eq!(status(q(&[("name", "a")])), (400, Some("name".into())));
        assert_eq!(parse_city_id("5809844").unwrap(), 5809844);
        assert!(parse_city_id("-1").is_err());
    }

    #[test]
    fn only_json_content_types_are_accepted() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            require_json(&headers)
        };
        assert!(with("application/json").is_ok());
        assert!(with("Application/JSON; charset=utf-8").is_ok());
        assert!(with("application/vnd.contrastgeo+json").is_ok());
        assert!(with("text/plain").is_err());
        assert!(require_json(&HeaderMap::new()).is_err());
    }
}
