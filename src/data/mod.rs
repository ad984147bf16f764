//! Labelled posts: reading them, turning them into encoder input, assigning them to cities, and the
//! benchmark split with its K-shot sampler.

pub mod ingest;
pub mod split;

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::geo::{CityId, CityTable, IdValue};
use crate::lines::{BoundedLines, Line, MAX_LINE_BYTES};

/// Errors of the data layer.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not in the expected format as a whole.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A post with a known place: a city id and/or coordinates (schema: `schema/labelled_post.schema.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LabelledPost {
    /// The post's id, when it has one (kept as text).
    #[serde(
        default,
        deserialize_with = "optional_id",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<IdValue>")]
    pub id: Option<String>,
    /// What the author wrote.
    pub text: String,
    /// The city it was written in.
    #[serde(
        default,
        deserialize_with = "optional_city",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<IdValue>")]
    pub city_id: Option<CityId>,
    /// Latitude of the post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Longitude of the post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// The author (an opaque id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// When it was posted (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The author's free-text profile location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_location: Option<String>,
}

fn optional_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<IdValue>::deserialize(d)?.map(|v| match v {
        IdValue::Number(n) => n.to_string(),
        IdValue::Text(s) => s,
    }))
}

fn optional_city<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<CityId>, D::Error> {
    Option::<IdValue>::deserialize(d)?
        .map(|v| v.to_u64().map_err(serde::de::Error::custom))
        .transpose()
}

/// What the post encoder reads of a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PostInput {
    /// The text alone.
    #[default]
    Text,
    /// "text, profile location, time" (missing parts skipped).
    TextProfileTime,
}

impl PostInput {
    /// The string the encoder sees for `post`.
    pub fn render(self, post: &LabelledPost) -> String {
        match self {
            PostInput::Text => post.text.clone(),
            PostInput::TextProfileTime => {
                let mut parts = vec![post.text.trim()];
                parts.extend(
                    post.user_location
                        .as_deref()
                        .map(str::trim)
                        .filter(|s| !s.is_empty()),
                );
                parts.extend(
                    post.time
                        .as_deref()
                        .map(str::trim)
                        .filter(|s| !s.is_empty()),
                );
                parts.join(", ")
            }
        }
    }
}

/// Posts read from a JSONL file, with the lines that could not be used.
#[derive(Debug, Default)]
pub struct ReadPosts {
    /// The posts, in file order.
    pub posts: Vec<LabelledPost>,
    /// `(line, reason)` for each rejected line.
    pub rejected: Vec<(usize, String)>,
}

/// Reads labelled posts from a JSONL file; bad lines (bad JSON, empty text, no place at all, too long) are
/// collected with their line numbers, not fatal.
pub fn read_labelled_posts(path: &Path) -> Result<ReadPosts, DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_labelled_posts(std::io::BufReader::new(file)).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses labelled posts from JSONL text (see [`read_labelled_posts`]); only an I/O error is fatal. Blank
/// lines are skipped silently; lines are capped at [`MAX_LINE_BYTES`].
pub fn parse_labelled_posts(reader: impl BufRead) -> std::io::Result<ReadPosts> {
    let mut lines = BoundedLines::new(reader, MAX_LINE_BYTES);
    let mut read = ReadPosts::default();
    while let Some((n, _, line)) = lines.next_line()? {
        let line = match line {
            Line::Kept(bytes) => bytes,
            Line::TooLong { bytes } => {
                read.rejected
                    .push((n, Line::too_long_message(bytes, MAX_LINE_BYTES)));
                continue;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<LabelledPost>(line) {
            Err(e) => read.rejected.push((n, e.to_string())),
            Ok(post) if post.text.trim().is_empty() => read.rejected.push((n, "empty text".into())),
            Ok(post) if post.city_id.is_none() && (post.lat.is_none() || post.lon.is_none()) => {
                read.rejected
                    .push((n, "neither city_id nor lat/lon".into()))
            }
            Ok(post) => read.posts.push(post),
        }
    }
    Ok(read)
}

/// Default radius for assigning coordinate-only posts to a city.
pub const DEFAULT_ASSIGN_RADIUS_KM: f64 = 50.0;

/// A post bound to a city of the active table.
#[derive(Debug, Clone)]
pub struct CityPost {
    /// The post.
    pub post: LabelledPost,
    /// Position of its city in the table.
    pub city: usize,
}

/// Binds posts to the table's cities: by `city_id` when it is in the table, else by coordinates to the nearest
/// city within `radius_km`. Returns the bound posts and how many were dropped.
pub fn assign_cities(
    posts: Vec<LabelledPost>,
    table: &CityTable,
    radius_km: f64,
) -> (Vec<CityPost>, usize) {
    let mut bound = Vec::with_capacity(posts.len());
    let mut dropped = 0;
    for post in posts {
        let by_id = post.city_id.and_then(|id| table.position(id));
        let by_point = || match (post.lat, post.lon) {
            (Some(lat), Some(lon)) if post.city_id.is_none() => {
                table.nearest_within(lat, lon, radius_km).map(|x| x.0)
            }
            _ => None,
        };
        match by_id.or_else(by_point) {
            Some(city) => bound.push(CityPost { post, city }),
            None => dropped += 1,
        }
    }
    (bound, dropped)
}

/// Whether `text` names its city (name or an alternate name, as a whole word, case-insensitive). Used to
/// report the slice of posts that do not give their city away.
pub fn names_city(text: &str, city: &crate::geo::City) -> bool {
    let lower = text.to_lowercase();
    let hay: String = lower
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let padded = format!(" {} ", hay.split_whitespace().collect::<Vec<_>>().join(" "));
    std::iter::once(&city.name)
        .chain(city.alternate_names.iter())
        .any(|name| {
            let name: String = name
                .to_lowercase()
                .chars()
                .map(|c| if c.is_alphanumeric() { c } else { ' ' })
                .collect();
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            name.len() >= 3
                && (padded.contains(&format!(" {name} "))
                    || padded.contains(&format!(" {} ", name.replace(' ', ""))))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::City;

    fn table() -> CityTable {
        let city = |id, name: &str, lat, lon| City {
            id,
            name: name.into(),
            admin1: None,
            country: "United States".into(),
            country_code: "US".into(),
            lat,
            lon,
            population: 0,
            alternate_names: vec![],
        };
        CityTable::new(vec![
            city(1, "Iowa City", 41.66, -91.53),
            city(2, "Des Moines", 41.60, -93.61),
        ])
        .unwrap()
    }

    #[test]
    fn posts_parse_with_string_or_number_ids_and_bad_lines_are_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("posts.jsonl");
        std::fs::write(
            &path,
            "{\"id\": 5, \"text\": \"hi\", \"city_id\": \"2\"}\n{\"text\": \"x\", \"lat\": 41.6, \"lon\": -91.5}\n\
             {\"text\": \"  \", \"city_id\": 1}\nnot json\n{\"text\": \"nowhere\"}\n",
        )
        .unwrap();
        let read = read_labelled_posts(&path).unwrap();
        assert_eq!(read.posts.len(), 2);
        assert_eq!(read.posts[0].id.as_deref(), Some("5"));
        assert_eq!(read.posts[0].city_id, Some(2));
        assert_eq!(
            read.rejected.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
    }

    #[test]
    fn coordinate_posts_go_to_the_nearest_city_within_the_radius() {
        let post = |lat, lon| LabelledPost {
            id: None,
            text: "t".into(),
            city_id: None,
            lat: Some(lat),
            lon: Some(lon),
            user: None,
            time: None,
            user_location: None,
        };
        let (bound, dropped) =
            assign_cities(vec![post(41.65, -91.55), post(45.0, -80.0)], &table(), 50.0);
        assert_eq!((bound.len(), dropped), (1, 1));
        assert_eq!(bound[0].city, 0);
    }

    #[test]
    fn name_mentions_are_whole_words_and_ignore_case_and_hashtags() {
        let t = table();
        let iowa_city = &t.cities()[0];
        assert!(names_city("Loving IOWA CITY today", iowa_city));
        assert!(names_city("#iowacity nights", iowa_city));
        assert!(!names_city("Iowa is nice", iowa_city));
        assert!(names_city("flying into des moines", &t.cities()[1]));
    }

    #[test]
    fn post_input_joins_present_fields() {
        let mut p = LabelledPost {
            id: None,
            text: "hello ".into(),
            city_id: Some(1),
            lat: None,
            lon: None,
            user: None,
            time: Some("Mon Jun 26".into()),
            user_location: Some(" ".into()),
        };
        assert_eq!(PostInput::TextProfileTime.render(&p), "hello, Mon Jun 26");
        p.user_location = Some("Iowa".into());
        assert_eq!(
            PostInput::TextProfileTime.render(&p),
            "hello, Iowa, Mon Jun 26"
        );
        assert_eq!(PostInput::Text.render(&p), "hello ");
    }
}
