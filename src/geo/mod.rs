//! Places: the city table, great-circle distances, and the GeoNames gazetteer import.
//!
//! Cities are [`contrastgeo_index::City`] records (the store persists the same type). A [`CityTable`] is the
//! active candidate set of a model or an evaluation; it maps coordinates to the nearest city.

pub mod gazetteer;
pub mod mentions;
pub mod name_map;
pub mod names_file;
pub mod places;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use contrastgeo_index::records::{City, CityId};
use serde::Deserialize;

use crate::lines::{BoundedLines, Line, MAX_LINE_BYTES};

/// Errors of the geo layer.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A record could not be parsed.
    #[error("{path}:{line}: {reason}")]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 for whole-file JSON).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Some records of a file could not be parsed: every one, with its line.
    #[error("{path}: {} bad city record(s): {}", lines.len(), lines.iter().take(10).map(|(n, why)| format!("line {n}: {why}")).collect::<Vec<_>>().join("; "))]
    BadRecords {
        /// The file.
        path: PathBuf,
        /// `(1-based line, what is wrong)` for each bad record.
        lines: Vec<(usize, String)>,
    },
    /// Two records share a city id.
    #[error("{path}: city id {id} appears twice")]
    DuplicateCity {
        /// The file.
        path: PathBuf,
        /// The repeated id.
        id: CityId,
    },
    /// The table would be empty.
    #[error("{0}: no cities")]
    Empty(PathBuf),
}

/// Mean Earth radius used for great-circle distances.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// 100 miles: the radius of the Acc@161km metric.
pub const ACC_RADIUS_KM: f64 = 161.0;

/// Great-circle (haversine) distance in km between two points given in degrees.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
}

/// The "Austin, Texas, United States" form of a city's place, skipping a missing region.
pub fn place_name(city: &City) -> String {
    match city
        .admin1
        .as_deref()
        .filter(|a| !a.is_empty() && *a != city.name)
    {
        Some(admin1) => format!("{}, {}, {}", city.name, admin1, city.country),
        None => format!("{}, {}", city.name, city.country),
    }
}

/// An ordered set of candidate cities with lookup by id and by position.
#[derive(Debug, Clone, Default)]
pub struct CityTable {
    cities: Vec<City>,
    index_of: HashMap<CityId, usize>,
}

impl CityTable {
    /// Builds a table; later duplicates of an id are an error.
    pub fn new(cities: Vec<City>) -> Result<Self, CityId> {
        let mut index_of = HashMap::with_capacity(cities.len());
        for (i, city) in cities.iter().enumerate() {
            if index_of.insert(city.id, i).is_some() {
                return Err(city.id);
            }
        }
        Ok(Self { cities, index_of })
    }

    /// Reads a cities JSONL file: the project's city schema (`schema/city.schema.json`), which also accepts
    /// the benchmark's `cities.jsonl` (string ids, no alternate names).
    pub fn read_jsonl(path: &Path) -> Result<Self, GeoError> {
        let file = std::fs::File::open(path).map_err(|source| GeoError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_jsonl(std::io::BufReader::new(file), path)
    }

    /// Parses JSONL city records read from `reader` (`path` names the source in errors). Every bad line
    /// is reported, not only the first: [`GeoError::BadRecords`] lists them all with their line numbers.
    pub fn parse_jsonl(reader: impl std::io::BufRead, path: &Path) -> Result<Self, GeoError> {
        let mut lines = BoundedLines::new(reader, MAX_LINE_BYTES);
        let mut cities = Vec::new();
        let mut bad: Vec<(usize, String)> = Vec::new();
        while let Some((n, _, line)) = lines.next_line().map_err(|source| GeoError::Io {
            path: path.to_path_buf(),
            source,
        })? {
            let line = match line {
                Line::Kept(bytes) => bytes,
                Line::TooLong { bytes } => {
                    bad.push((n, Line::too_long_message(bytes, MAX_LINE_BYTES)));
                    continue;
                }
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<CityRecord>(line)
                .map_err(|e| e.to_string())
                .and_then(CityRecord::into_city)
            {
                Ok(city) => cities.push(city),
                Err(reason) => bad.push((n, reason)),
            }
        }
        if !bad.is_empty() {
            return Err(GeoError::BadRecords {
                path: path.to_path_buf(),
                lines: bad,
            });
        }
        if cities.is_empty() {
            return Err(GeoError::Empty(path.to_path_buf()));
        }
        Self::new(cities).map_err(|id| GeoError::DuplicateCity {
            path: path.to_path_buf(),
            id,
        })
    }

    /// Writes the table as JSONL in the project's city schema.
    pub fn write_jsonl(&self, path: &Path) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for city in &self.cities {
            serde_json::to_writer(&mut out, city)?;
            std::io::Write::write_all(&mut out, b"\n")?;
        }
        std::io::Write::flush(&mut out)
    }

    /// The cities in table order.
    pub fn cities(&self) -> &[City] {
        &self.cities
    }

    /// Number of cities.
    pub fn len(&self) -> usize {
        self.cities.len()
    }

    /// Whether the table has no city.
    pub fn is_empty(&self) -> bool {
        self.cities.is_empty()
    }

    /// Position of a city id in the table.
    pub fn position(&self, id: CityId) -> Option<usize> {
        self.index_of.get(&id).copied()
    }

    /// The city with this id.
    pub fn get(&self, id: CityId) -> Option<&City> {
        self.position(id).map(|i| &self.cities[i])
    }

    /// The nearest city within `radius_km` of a point, with its distance.
    pub fn nearest_within(&self, lat: f64, lon: f64, radius_km: f64) -> Option<(usize, f64)> {
        self.cities
            .iter()
            .enumerate()
            .map(|(i, c)| (i, haversine_km(lat, lon, c.lat, c.lon)))
            .filter(|&(_, d)| d <= radius_km)
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// A table of the cities whose ids are in `ids`, in this table's order.
    pub fn subset(&self, ids: &std::collections::HashSet<CityId>) -> Self {
        let cities = self
            .cities
            .iter()
            .filter(|c| ids.contains(&c.id))
            .cloned()
            .collect();
        Self::new(cities).unwrap_or_default()
    }
}

/// A city line as found in JSONL files: the project's schema, or the benchmark's (string ids).
#[derive(Debug, Deserialize)]
struct CityRecord {
    id: IdValue,
    name: String,
    #[serde(default)]
    admin1: Option<String>,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    country_code: Option<String>,
    lat: f64,
    lon: f64,
    #[serde(default)]
    population: Option<u64>,
    #[serde(default)]
    alternate_names: Vec<String>,
}

/// An id written as a JSON number or a string of digits.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum IdValue {
    /// `123`
    Number(u64),
    /// `"123"`
    Text(String),
}

impl IdValue {
    /// The numeric id, or why there is none.
    pub fn to_u64(&self) -> Result<u64, String> {
        match self {
            IdValue::Number(n) => Ok(*n),
            IdValue::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("id {s:?} is not a number")),
        }
    }
}

impl CityRecord {
    fn into_city(self) -> Result<City, String> {
        if !(-90.0..=90.0).contains(&self.lat) || !(-180.0..=180.0).contains(&self.lon) {
            return Err(format!(
                "coordinates ({}, {}) out of range",
                self.lat, self.lon
            ));
        }
        if self.name.trim().is_empty() {
            return Err("empty city name".into());
        }
        Ok(City {
            id: self.id.to_u64()?,
            name: self.name,
            admin1: self.admin1.filter(|a| !a.is_empty()),
            country: self.country.unwrap_or_default(),
            country_code: self.country_code.unwrap_or_default(),
            lat: self.lat,
            lon: self.lon,
            population: self.population.unwrap_or(0),
            alternate_names: self.alternate_names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn city(id: u64, name: &str, lat: f64, lon: f64) -> City {
        City {
            id,
            name: name.into(),
            admin1: Some("Texas".into()),
            country: "United States".into(),
            country_code: "US".into(),
            lat,
            lon,
            population: 1,
            alternate_names: vec![],
        }
    }

    #[test]
    fn haversine_matches_known_distances() {
        // Austin -> Dallas is about 293 km; a point to itself is 0.
        let d = haversine_km(30.26715, -97.74306, 32.78306, -96.80667);
        assert!((d - 293.0).abs() < 3.0, "{d}");
        assert_eq!(haversine_km(10.0, 20.0, 10.0, 20.0), 0.0);
        // Quarter of the equator.
        let q = haversine_km(0.0, 0.0, 0.0, 90.0);
        assert!((q - std::f64::consts::PI / 2.0 * EARTH_RADIUS_KM).abs() < 1e-6);
    }

    #[test]
    fn nearest_within_respects_the_radius() {
        let table = CityTable::new(vec![
            city(1, "Austin", 30.27, -97.74),
            city(2, "Dallas", 32.78, -96.81),
        ])
        .unwrap();
        assert_eq!(
            table.nearest_within(30.3, -97.7, 50.0).map(|x| x.0),
            Some(0)
        );
        assert_eq!(table.nearest_within(31.5, -97.2, 50.0), None);
        assert!(CityTable::new(vec![city(1, "A", 0.0, 0.0), city(1, "B", 1.0, 1.0)]).is_err());
    }

    #[test]
    fn place_names_skip_missing_regions() {
        let mut austin = city(1, "Austin", 30.27, -97.74);
        assert_eq!(place_name(&austin), "Austin, Texas, United States");
        austin.admin1 = None;
        assert_eq!(place_name(&austin), "Austin, United States");
    }
}
