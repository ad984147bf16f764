//! The place knowledge base: names that point at a city without being its name ("Faneuil Hall", "Kreuzberg",
//! "Heathrow", "LHR", "Red Sox"), built by `tools/setup.sh` (`tools/kb/build_kb.py`) into the gazetteer
//! folder as `places.tsv` from pinned registry packages (GeoNames cities500, airports-py) and the project's
//! own lists (`tools/kb/landmarks/`).
//!
//! Each row names the gazetteer city the place belongs to and a strength (0..1): the evidence a match gives,
//! already shared among namesakes (the same name elsewhere, in the knowledge base or as a gazetteer city) and
//! lowered for short names. Airport codes are matched as written (upper case), everything else like a
//! gazetteer name (see [`super::mentions`]).

use std::path::{Path, PathBuf};

use super::{CityId, GeoError};
use crate::lines::{BoundedLines, Line, MAX_LINE_BYTES};

/// The knowledge base's file name in the gazetteer folder.
pub const PLACES_FILE: &str = "places.tsv";

/// The columns of `places.tsv`, in order.
pub const COLUMNS: [&str; 9] = [
    "name",
    "kind",
    "lat",
    "lon",
    "city_id",
    "city_name",
    "distance_km",
    "strength",
    "source",
];

/// What a knowledge-base name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceKind {
    /// A landmark, building, monument, museum or square (the project's lists).
    Landmark,
    /// A neighbourhood or district (GeoNames PPLX or the project's lists).
    Neighbourhood,
    /// A street (the project's lists).
    Street,
    /// A stadium, arena or other venue (the project's lists).
    Venue,
    /// A sports team (the project's lists).
    Team,
    /// A university (the project's lists).
    University,
    /// A park (the project's lists).
    Park,
    /// A region or nickname that stands for one city's area: "Bay Area", "Windy City" (the project's lists).
    Region,
    /// A populated place smaller than the gazetteer's cities: a suburb, town or village (GeoNames).
    Place,
    /// An airport's name, or a short form of it.
    Airport,
    /// An airport's IATA or ICAO code, matched as written.
    AirportCode,
}

impl PlaceKind {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "landmark" => Self::Landmark,
            "neighbourhood" => Self::Neighbourhood,
            "street" => Self::Street,
            "venue" => Self::Venue,
            "team" => Self::Team,
            "university" => Self::University,
            "park" => Self::Park,
            "region" => Self::Region,
            "place" => Self::Place,
            "airport" => Self::Airport,
            "airport_code" => Self::AirportCode,
            _ => return None,
        })
    }
}

/// One name of the knowledge base.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownPlace {
    /// The name as written ("Faneuil Hall", "LHR").
    pub name: String,
    /// What it is.
    pub kind: PlaceKind,
    /// The gazetteer city it belongs to.
    pub city: CityId,
    /// The evidence a match gives for that city, 0..1.
    pub strength: f32,
}

/// Reads `places.tsv`. A bad row (wrong column count, unknown kind, a city id or strength that is not a
/// number, a strength outside 0..1, an empty name) fails the whole read with every bad row's line listed
/// ([`GeoError::BadRecords`]): a knowledge base is used whole or not at all.
pub fn read_places(path: &Path) -> Result<Vec<KnownPlace>, GeoError> {
    let file = std::fs::File::open(path).map_err(|source| GeoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_places(std::io::BufReader::with_capacity(1 << 20, file), path)
}

/// [`read_places`] from a reader (`path` names the source in errors).
pub fn parse_places(
    reader: impl std::io::BufRead,
    path: &Path,
) -> Result<Vec<KnownPlace>, GeoError> {
    let io_error = |source| GeoError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut lines = BoundedLines::new(reader, MAX_LINE_BYTES);
    let mut places = Vec::new();
    let mut bad: Vec<(usize, String)> = Vec::new();
    let mut header_seen = false;
    while let Some((n, _, line)) = lines.next_line().map_err(io_error)? {
        let line = match line {
            Line::Kept(bytes) => bytes,
            Line::TooLong { bytes } => {
                bad.push((n, Line::too_long_message(bytes, MAX_LINE_BYTES)));
                continue;
            }
        };
        let Ok(text) = std::str::from_utf8(line) else {
            bad.push((n, "not UTF-8".into()));
            continue;
        };
        let text = text.trim_end_matches(['\r', '\n']);
        if !header_seen {
            header_seen = true;
            if text.split('\t').ne(COLUMNS) {
                return Err(GeoError::BadRecord {
                    path: path.to_path_buf(),
                    line: n,
                    reason: format!("header is not {}", COLUMNS.join("\\t")),
                });
            }
            continue;
        }
        if text.trim().is_empty() {
            continue;
        }
        match parse_row(text) {
            Ok(place) => places.push(place),
            Err(reason) => bad.push((n, reason)),
        }
    }
    if !header_seen {
        return Err(GeoError::Empty(path.to_path_buf()));
    }
    if !bad.is_empty() {
        return Err(GeoError::BadRecords {
            path: path.to_path_buf(),
            lines: bad,
        });
    }
    Ok(places)
}

fn parse_row(text: &str) -> Result<KnownPlace, String> {
    let fields: Vec<&str> = text.split('\t').collect();
    let [name, kind, _lat, _lon, city, _city_name, _km, strength, _source] = fields[..] else {
        return Err(format!(
            "{} columns, expected {}",
            fields.len(),
            COLUMNS.len()
        ));
    };
    if name.trim().is_empty() {
        return Err("empty name".into());
    }
    let kind = PlaceKind::parse(kind).ok_or_else(|| format!("unknown kind {kind:?}"))?;
    let city = city
        .parse()
        .map_err(|_| format!("city id {city:?} is not a number"))?;
    let strength: f32 = strength
        .parse()
        .map_err(|_| format!("strength {strength:?} is not a number"))?;
    if !(0.0..=1.0).contains(&strength) {
        return Err(format!("strength {strength} is outside 0..1"));
    }
    Ok(KnownPlace {
        name: name.to_owned(),
        kind,
        city,
        strength,
    })
}

/// `places.tsv` in the gazetteer folder `dir`.
pub fn places_path(dir: &Path) -> PathBuf {
    dir.join(PLACES_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "name\tkind\tlat\tlon\tcity_id\tcity_name\tdistance_km\tstrength\tsource\n";

    fn parse(body: &str) -> Result<Vec<KnownPlace>, GeoError> {
        parse_places(
            std::io::Cursor::new(format!("{HEADER}{body}")),
            Path::new("places.tsv"),
        )
    }

    #[test]
    fn reads_rows_of_every_kind() {
        let places = parse(
            "Faneuil Hall\tlandmark\t42.36\t-71.06\t4930956\tBoston\t0.0\t0.950\tlandmarks/us_canada.tsv\n\
             LHR\tairport_code\t51.47\t-0.45\t2643743\tLondon\t22.1\t0.900\tairports_py-3.1.0/airports.gz\n\n",
        )
        .unwrap();
        assert_eq!(places.len(), 2);
        assert_eq!(places[0].name, "Faneuil Hall");
        assert_eq!(places[0].kind, PlaceKind::Landmark);
        assert_eq!(places[0].city, 4930956);
        assert_eq!(places[1].kind, PlaceKind::AirportCode);
        assert!((places[1].strength - 0.9).abs() < 1e-6);
    }

    #[test]
    fn every_bad_row_is_named_and_nothing_is_returned() {
        let err = parse(
            "Good Place\tplace\t0\t0\t1\tA\t0\t0.5\ts\n\
             Short\tplace\t0\n\
             Odd\tshrine\t0\t0\t1\tA\t0\t0.5\ts\n\
             Idless\tplace\t0\t0\tx1\tA\t0\t0.5\ts\n\
             Strong\tplace\t0\t0\t1\tA\t0\t1.5\ts\n\
             \tplace\t0\t0\t1\tA\t0\t0.5\ts\n",
        )
        .unwrap_err();
        let GeoError::BadRecords { lines, .. } = &err else {
            panic!("{err}");
        };
        let numbers: Vec<usize> = lines.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [3, 4, 5, 6, 7]);
        let message = err.to_string();
        for why in [
            "3 columns",
            "unknown kind \"shrine\"",
            "\"x1\" is not a number",
            "outside 0..1",
            "empty name",
        ] {
            assert!(message.contains(why), "{message}");
        }
    }

    #[test]
    fn a_file_without_the_header_is_refused() {
        let err = parse_places(
            std::io::Cursor::new("Faneuil Hall\tlandmark\n"),
            Path::new("p.tsv"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("header"), "{err}");
        let err = parse_places(std::io::Cursor::new(""), Path::new("p.tsv")).unwrap_err();
        assert!(matches!(err, GeoError::Empty(_)), "{err}");
    }
}
