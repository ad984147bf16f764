//! What an analyst hands in to teach the store a city: labelled posts naming a known city by id, or a new
//! city record (name and coordinates) with or without posts. Parsed and validated as a whole before
//! anything is written, so a file with a fatal problem writes nothing.
//!
//! A JSONL line is one of
//!
//! ```text
//! {"text": "Cyclones win again", "city_id": 4846834}                    a post about a known city
//! {"text": "...", "city": {"name": "Ames", "admin1": "Iowa", "country": "United States",
//!                          "lat": 42.03, "lon": -93.62, "aliases": ["Cyclone Town"]}}   a post and a new city
//! {"city": {...}}                                                        a new city without posts
//! ```
//!
//! with optional `id` (the post's own id: two lines with one id are a problem) and `source`. A CSV/TSV file
//! has a header naming the columns `text`, `city_id`, or the new city's `name`, `admin1`, `country`,
//! `country_code`, `lat`, `lon` (and optionally `id`).
//!
//! A new city without an `id` gets one derived from its name, region and country (the same city named
//! twice gets the same id), in a range GeoNames does not use (from [`ANALYST_CITY_IDS`]).

use std::collections::HashMap;
use std::io::BufRead;

use serde::Deserialize;

use crate::geo::{City, CityId};
use crate::lines::{BoundedLines, Line, MAX_LINE_BYTES};

/// Ids of analyst-made cities start here (GeoNames ids are far below).
pub const ANALYST_CITY_IDS: CityId = 2_000_000_000;

/// A new city as an analyst describes it.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCity {
    /// Its id, when the analyst has one (e.g. from GeoNames); derived from the name otherwise.
    #[serde(default)]
    pub id: Option<CityId>,
    /// City name.
    pub name: String,
    /// State or region.
    #[serde(default)]
    pub admin1: Option<String>,
    /// Country name.
    #[serde(default)]
    pub country: Option<String>,
    /// ISO 3166-1 alpha-2 country code.
    #[serde(default)]
    pub country_code: Option<String>,
    /// Latitude in degrees, within [-90, 90].
    pub lat: Option<f64>,
    /// Longitude in degrees, within [-180, 180].
    pub lon: Option<f64>,
    /// Other names, nicknames or codes people use for it.
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl NewCity {
    /// The city record, or what is wrong with this description.
    pub fn to_city(&self) -> Result<City, String> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err("`city.name` is empty".into());
        }
        let (lat, lon) = match (self.lat, self.lon) {
            (Some(lat), Some(lon)) => (lat, lon),
            _ => {
                return Err(format!(
                    "new city {name:?} has no coordinates: give `lat` and `lon`"
                ))
            }
        };
        if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
            return Err(format!("`city.lat` {lat} is not within [-90, 90]"));
        }
        if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
            return Err(format!("`city.lon` {lon} is not within [-180, 180]"));
        }
        let country = self.country.clone().unwrap_or_default();
        let admin1 = self.admin1.clone().filter(|a| !a.trim().is_empty());
        let id = self
            .id
            .unwrap_or_else(|| analyst_city_id(name, admin1.as_deref(), &country));
        Ok(City {
            id,
            name: name.to_string(),
            admin1,
            country,
            country_code: self.country_code.clone().unwrap_or_default(),
            lat,
            lon,
            population: 0,
            alternate_names: self.aliases.clone(),
        })
    }
}

/// The id of an analyst-made city without one: a hash of its name, region and country (ignoring case).
pub fn analyst_city_id(name: &str, admin1: Option<&str>, country: &str) -> CityId {
    let key = format!(
        "{}|{}|{}",
        name.trim().to_lowercase(),
        admin1.unwrap_or("").trim().to_lowercase(),
        country.trim().to_lowercase()
    );
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ANALYST_CITY_IDS + hash % 1_000_000_000
}

/// One line of an ingest file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestLine {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    city_id: Option<crate::geo::IdValue>,
    #[serde(default)]
    city: Option<NewCity>,
    #[serde(default)]
    source: Option<String>,
}

/// A CSV/TSV record of an ingest file.
#[derive(Debug, Clone, Deserialize)]
struct IngestRecord {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    city_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    admin1: Option<String>,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    country_code: Option<String>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
}

/// A labelled post ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestPost {
    /// The input line it came from.
    pub line: usize,
    /// What the author wrote.
    pub text: String,
    /// Its city.
    pub city: CityId,
    /// Where it came from.
    pub source: Option<String>,
}

/// A validated ingest: what to store, and every problem found, each with its line.
#[derive(Debug, Clone, Default)]
pub struct IngestPlan {
    /// Cities to add to the store: new ones, and known ids the store does not have yet (gazetteer).
    pub cities: Vec<City>,
    /// Posts to store.
    pub posts: Vec<IngestPost>,
    /// `(line, what is wrong)` for every rejected line.
    pub problems: Vec<(usize, String)>,
}

/// Where known city ids are looked up: the store first, then the gazetteer.
pub trait CityLookup {
    /// Whether the store already has this city.
    fn in_store(&self, id: CityId) -> bool;
    /// The gazetteer's record of this city, when the store lacks it.
    fn in_gazetteer(&self, id: CityId) -> Option<City>;
}

/// Which syntax an ingest file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestFormat {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header.
    Csv,
    /// TSV with a header.
    Tsv,
}

/// Parses and validates an ingest file. Problems are collected, never fatal here: the caller decides
/// (refuse all, or `--skip-bad`). Only an I/O error fails.
pub fn plan_ingest(
    reader: impl BufRead,
    format: IngestFormat,
    default_source: &str,
    lookup: &dyn CityLookup,
) -> std::io::Result<IngestPlan> {
    let lines = match format {
        IngestFormat::Jsonl => read_jsonl(reader)?,
        IngestFormat::Csv => read_table(reader, b',')?,
        IngestFormat::Tsv => read_table(reader, b'\t')?,
    };
    let mut plan = IngestPlan::default();
    let mut cities: HashMap<CityId, City> = HashMap::new();
    let mut post_ids: HashMap<String, usize> = HashMap::new();
    for (line, parsed) in lines {
        match parsed.and_then(|l| resolve(line, l, default_source, lookup, &cities, &mut post_ids))
        {
            Ok((city, post)) => {
                if let Some(city) = city {
                    cities.entry(city.id).or_insert(city);
                }
                plan.posts.extend(post);
            }
            Err(why) => plan.problems.push((line, why)),
        }
    }
    let mut cities: Vec<City> = cities.into_values().collect();
    cities.sort_by_key(|c| c.id);
    plan.cities = cities;
    Ok(plan)
}

/// Resolves one parsed line to the city it adds (if any) and the post it labels (if any).
fn resolve(
    line: usize,
    parsed: IngestLine,
    default_source: &str,
    lookup: &dyn CityLookup,
    seen: &HashMap<CityId, City>,
    post_ids: &mut HashMap<String, usize>,
) -> Result<(Option<City>, Option<IngestPost>), String> {
    let text = parsed.text.map(|t| t.trim().to_string());
    if let Some(text) = &text {
        if text.is_empty() {
            return Err("empty text".into());
        }
    }
    let (city, added) = match (parsed.city_id, parsed.city) {
        (Some(_), Some(_)) => return Err("give `city_id` or `city`, not both".into()),
        (None, None) => return Err("no city: give `city_id` or a new `city`".into()),
        (Some(id), None) => {
            let id = id.to_u64().map_err(|why| format!("`city_id`: {why}"))?;
            if lookup.in_store(id) || seen.contains_key(&id) {
                (id, None)
            } else {
                let city = lookup.in_gazetteer(id).ok_or_else(|| {
                    format!(
                        "unknown city id {id}: neither the store nor the gazetteer has it \
                         (describe a new city with `city`: name, lat, lon)"
                    )
                })?;
                (id, Some(city))
            }
        }
        (None, Some(new)) => {
            let city = new.to_city()?;
            if let Some(existing) = seen.get(&city.id) {
                if existing.name != city.name
                    || existing.lat != city.lat
                    || existing.lon != city.lon
                {
                    return Err(format!(
                        "duplicate city id {}: another line describes it as {:?} at ({}, {})",
                        city.id, existing.name, existing.lat, existing.lon
                    ));
                }
            }
            (city.id, Some(city))
        }
    };
    if text.is_none() && added.is_none() {
        return Err("no `text`: a line names a post, a new city, or both".into());
    }
    if let Some(id) = parsed.id.as_ref().map(|v| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }) {
        if let Some(first) = post_ids.insert(id.clone(), line) {
            return Err(format!("duplicate post id {id:?} (also on line {first})"));
        }
    }
    let post = text.map(|text| IngestPost {
        line,
        text,
        city,
        source: Some(parsed.source.unwrap_or_else(|| default_source.to_string())),
    });
    Ok((added, post))
}

type Parsed = Vec<(usize, Result<IngestLine, String>)>;

fn read_jsonl(reader: impl BufRead) -> std::io::Result<Parsed> {
    let mut lines = BoundedLines::new(reader, MAX_LINE_BYTES);
    let mut out = Vec::new();
    while let Some((n, _, line)) = lines.next_line()? {
        let parsed = match line {
            Line::TooLong { bytes } => Err(Line::too_long_message(bytes, MAX_LINE_BYTES)),
            Line::Kept(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Kept(bytes) => {
                serde_json::from_slice::<IngestLine>(bytes).map_err(|e| e.to_string())
            }
        };
        out.push((n, parsed));
    }
    Ok(out)
}

fn read_table(reader: impl BufRead, delimiter: u8) -> std::io::Result<Parsed> {
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = csv.headers().map_err(std::io::Error::other)?.clone();
    let mut out = Vec::new();
    for record in csv.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                out.push((line, Err(e.to_string())));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line() as usize);
        let parsed = record
            .deserialize::<IngestRecord>(Some(&headers))
            .map_err(|e| e.to_string())
            .map(|r| {
                let empty = |v: Option<String>| v.filter(|s| !s.is_empty());
                let name = empty(r.name);
                IngestLine {
                    id: empty(r.id).map(serde_json::Value::String),
                    text: r.text,
                    city_id: empty(r.city_id).map(crate::geo::IdValue::Text),
                    city: name.map(|name| NewCity {
                        id: None,
                        name,
                        admin1: empty(r.admin1),
                        country: empty(r.country),
                        country_code: empty(r.country_code),
                        lat: r.lat,
                        lon: r.lon,
                        aliases: Vec::new(),
                    }),
                    source: None,
                }
            });
        out.push((line, parsed));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Known;
    impl CityLookup for Known {
        fn in_store(&self, id: CityId) -> bool {
            id == 1
        }
        fn in_gazetteer(&self, id: CityId) -> Option<City> {
            (id == 2).then(|| City {
                id: 2,
                name: "Gazetteer Town".into(),
                admin1: None,
                country: "X".into(),
                country_code: "XX".into(),
                lat: 0.0,
                lon: 0.0,
                population: 10,
                alternate_names: vec![],
            })
        }
    }

    fn plan(input: &str, format: IngestFormat) -> IngestPlan {
        plan_ingest(
            std::io::Cursor::new(input.as_bytes().to_vec()),
            format,
            "file",
            &Known,
        )
        .unwrap()
    }

    #[test]
    fn every_problem_is_reported_with_its_line_and_good_lines_are_planned() {
        let input = concat!(
            "{\"text\": \"known city\", \"city_id\": 1}\n",
            "{\"text\": \"from the gazetteer\", \"city_id\": \"2\"}\n",
            "{\"text\": \"new\", \"city\": {\"name\": \"Ames\", \"admin1\": \"Iowa\", \"lat\": 42.03, \"lon\": -93.62}}\n",
            "{\"city\": {\"name\": \"Ames\", \"admin1\": \"Iowa\", \"lat\": 42.03, \"lon\": -93.62}}\n",
            "{\"text\": \"unknown\", \"city_id\": 3}\n",
            "{\"text\": \"no coords\", \"city\": {\"name\": \"Nowhere\"}}\n",
            "{\"text\": \"bad lat\", \"city\": {\"name\": \"Up\", \"lat\": 95, \"lon\": 0}}\n",
            "{\"text\": \"   \", \"city_id\": 1}\n",
            "{\"id\": \"a\", \"text\": \"one\", \"city_id\": 1}\n",
            "{\"id\": \"a\", \"text\": \"two\", \"city_id\": 1}\n",
            "{\"text\": \"nan\", \"city\": {\"name\": \"N\", \"lat\": 1, \"lon\": 1e999}}\n",
            "not json\n",
            "{\"text\": \"x\"}\n",
        );
        let plan = plan(input, IngestFormat::Jsonl);
        let lines: Vec<usize> = plan.problems.iter().map(|(l, _)| *l).collect();
        assert_eq!(
            lines,
            vec![5, 6, 7, 8, 10, 11, 12, 13],
            "{:?}",
            plan.problems
        );
        let why = |line: usize| &plan.problems.iter().find(|(l, _)| *l == line).unwrap().1;
        assert!(why(5).contains("unknown city id 3"));
        assert!(why(6).contains("no coordinates"));
        assert!(why(7).contains("lat"));
        assert!(why(8).contains("empty text"));
        assert!(why(10).contains("duplicate post id"));
        assert_eq!(plan.posts.len(), 4);
        let ames = analyst_city_id("Ames", Some("Iowa"), "");
        assert_eq!(
            plan.cities.iter().map(|c| c.id).collect::<Vec<_>>(),
            vec![2, ames],
            "the gazetteer city and one Ames, however often it is described"
        );
        assert_eq!(plan.posts[2].city, ames);
    }

    #[test]
    fn csv_names_a_known_city_by_id_or_describes_a_new_one() {
        let input =
            "text,city_id,name,lat,lon\nhello,1,,,\nnew place,,Springfield,39.8,-89.6\n,,,,\n";
        let plan = plan(input, IngestFormat::Csv);
        assert_eq!(plan.posts.len(), 2);
        assert_eq!(plan.cities.len(), 1);
        assert_eq!(plan.cities[0].name, "Springfield");
        assert_eq!(plan.problems.len(), 1, "{:?}", plan.problems);
        assert_eq!(plan.problems[0].0, 4);
    }
}
