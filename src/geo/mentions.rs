//! Place names written in a post: "Brooklyn", "Round Rock", "Evanston" point at a city even when the post
//! never names the city itself.
//!
//! A [`PlaceNames`] table maps every name and plain-ASCII alternate name of a set of places (the gazetteer's
//! cities, or a store's own) to the places that bear it. [`PlaceNames::find`] scans a text for them: runs of
//! up to [`MAX_NAME_WORDS`] words whose first word is capitalised in the text (a place name, not the common
//! word "reading" or "mobile"), longest match first, never overlapping. Each match carries every namesake with
//! its share of their total population: "Paris" is Paris, France far more often than Paris, Texas. A
//! capitalised word opening a sentence says nothing by its capital, so there a one-word name counts only when
//! the word is not an ordinary word of the language (the caller says which are: the model's vocabulary).
//!
//! The place knowledge base ([`super::places`]) adds names that are not cities ("Faneuil Hall", "Heathrow"),
//! each pointing at its city with the strength the knowledge base gives it, and airport codes ("LHR"), which
//! count only as written: upper case, and not inside a run of capitals ("GO CAN GO" is shouting, not Guangzhou).

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use super::name_map::NameMap;

use super::places::{KnownPlace, PlaceKind};
use super::{City, CityId, CityTable};

/// The whole gazetteer's place names and the place knowledge base's, read once per process from the data
/// home's gazetteer folder (see [`crate::home::gazetteer_dir`]; compiled into a file there on first use, see
/// [`super::names_file`]); `None` (with a warning) when the gazetteer cannot be read, e.g. before
/// `tools/setup.sh` ran: posts are then matched against the stored cities' names only. A knowledge base that
/// is missing or has bad rows is left out with a warning naming them.
pub fn gazetteer_names() -> Option<Arc<PlaceNames>> {
    static NAMES: OnceLock<Option<Arc<PlaceNames>>> = OnceLock::new();
    NAMES
        .get_or_init(|| {
            let dir = crate::home::gazetteer_dir(None);
            match super::names_file::load_or_build(&dir) {
                Ok(names) => Some(Arc::new(names)),
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

/// Longest place name matched, in words ("Salt Lake City", "Palace of Culture and Science", "Ciudad de las
/// Artes y las Ciencias"): the knowledge base has about 1,300 names of six to eight words.
pub const MAX_NAME_WORDS: usize = 8;

/// Shortest name matched, in characters: shorter ones ("Of", "Ea") are mostly words or abbreviations.
pub const MIN_NAME_CHARS: usize = 4;

/// A place a name may stand for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Place {
    /// Its id (a GeoNames id for gazetteer places).
    pub id: CityId,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Its share of the population of every place bearing the same name (1 for a unique name).
    pub share: f32,
    /// Whether it is a place of the knowledge base's lists or an airport (a landmark, neighbourhood,
    /// street, venue, team, university, park, region or airport), not a city, town or village: such a name
    /// is specific to one city, so an answer it names is right more often than its probability says.
    pub known: bool,
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlaceNames {
    /// Normalised name (see [`normalise`]) -> its places.
    by_name: NameMap,
    /// Airport code, as written ("LHR") -> the cities it points at.
    codes: NameMap,
    /// Normalised names of two words or more of landmarks, streets, venues, teams, universities, parks and
    /// neighbourhoods, which also count written in lower case ("pike place market"): the project's lists
    /// hold only names specific to one city, unlike a village's name, which may be any phrase.
    any_case: NameMap,
    /// Every city's id, sorted (of the cities the table was made from; knowledge-base names add none).
    ids: Vec<CityId>,
}

/// A [`PlaceNames`] table being filled: cities' names, then the knowledge base's.
#[derive(Debug, Default)]
pub struct PlaceNamesBuilder {
    by_name: HashMap<String, Vec<Place>>,
    codes: HashMap<String, Vec<Place>>,
    any_case: HashMap<String, Vec<Place>>,
    ids: HashSet<CityId>,
}

impl PlaceNamesBuilder {
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
                known: false,
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
                known: known.kind != PlaceKind::Place,
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

    /// The finished table.
    pub fn build(self) -> PlaceNames {
        let mut ids: Vec<CityId> = self.ids.into_iter().collect();
        ids.sort_unstable();
        PlaceNames {
            by_name: NameMap::new(self.by_name),
            codes: NameMap::new(self.codes),
            any_case: NameMap::new(self.any_case),
            ids,
        }
    }
}

impl PlaceNames {
    /// The names (and plain-ASCII alternate names) of `cities`.
    pub fn from_cities<'a>(cities: impl IntoIterator<Item = &'a City>) -> Self {
        PlaceNamesBuilder::from_cities(cities).build()
    }

    /// Whether every lookup stays inside the table: what a table read from a file must satisfy.
    pub fn is_consistent(&self) -> bool {
        [&self.by_name, &self.codes, &self.any_case]
            .iter()
            .all(|map| map.is_consistent())
            && self.ids.windows(2).all(|w| w[0] < w[1])
    }

    /// Whether the place `id` is in the table.
    pub fn has_place(&self, id: CityId) -> bool {
        self.ids.binary_search(&id).is_ok()
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
    /// `is_common_word` tells whether a word is an ordinary word of the language (e.g. a whole word of the
    /// model's vocabulary): a capitalised word opening a sentence counts as a one-word name only when it is
    /// not one ("Atomium at sunset" names a place, "Sunset over the bay" does not).
    pub fn find(&self, text: &str, is_common_word: &dyn Fn(&str) -> bool) -> Vec<Mention<'_>> {
        let words = words(text);
        let keys: Vec<String> = words.iter().map(|w| normalise(w.text)).collect();
        let mut found = Vec::new();
        let mut at = 0;
        let mut key = String::new();
        while at < words.len() {
            let first = &words[at];
            let capitalised = is_capitalised(first);
            // The window's key grows word by word; the longest window that is a name wins.
            let mut longest = None;
            let mut later_capital = false;
            key.clear();
            for n in 1..=MAX_NAME_WORDS.min(words.len() - at) {
                if n > 1 && words[at + n - 1].after_break {
                    break;
                }
                if n > 1 {
                    key.push(' ');
                    later_capital |= is_capitalised(&words[at + n - 1]);
                }
                key.push_str(&keys[at + n - 1]);
                // Opening a sentence, the first capital says nothing: a place's name of several words needs
                // a capital further on too ("Hot Springs", not "Hot springs in Beitou"), and a one-word name
                // must not be an ordinary word (asked only once the word is a name, off the common path).
                let places = match self.any_case.get(&key) {
                    Some(places) if n >= 2 => Some(places),
                    _ if capitalised && (n == 1 || !first.opens_sentence || later_capital) => self
                        .by_name
                        .get(&key)
                        .filter(|_| n >= 2 || !first.opens_sentence || !is_common_word(first.text)),
                    _ => None,
                };
                if let Some(places) = places {
                    longest = Some((n, places));
                }
            }
            match longest {
                Some((n, places)) => {
                    let written = words[at..at + n]
                        .iter()
                        .map(|w| w.text)
                        .collect::<Vec<_>>()
                        .join(" ");
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
            .then(|| self.codes.get(word.text))
            .flatten()
    }
}

/// A word of a text.
struct Word<'a> {
    /// Letters and digits, with inner apostrophes, dots and hyphens ("O'Hare", "Winston-Salem").
    text: &'a str,
    /// Whether it is the text's first word or follows a '.', '!', '?' or line break (a hashtag never is).
    opens_sentence: bool,
    /// Whether a comma, semicolon, '|', '@' or line break separates it from the word before: no name runs
    /// across one ("@ New York, New York" is the city twice, not the Las Vegas casino "New York-New York").
    after_break: bool,
}

/// Whether the word starts with a capital letter.
fn is_capitalised(word: &Word) -> bool {
    word.text.chars().next().is_some_and(char::is_uppercase)
}

/// Characters no place name runs across (see [`Word::after_break`]).
const NAME_BREAKS: [char; 5] = [',', ';', '|', '@', '\n'];

/// A text's words (see [`Word`]); other punctuation, '#' and '@' separate them.
fn words(text: &str) -> Vec<Word<'_>> {
    let is_inner = |c: char| c.is_alphanumeric() || matches!(c, '\'' | '.' | '-');
    let mut words = Vec::new();
    let mut opens_sentence = true;
    let mut broken = false;
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
            broken |= gap.contains(NAME_BREAKS);
        } else {
            words.push(Word {
                text: word,
                opens_sentence: opens_sentence && !hashtag,
                after_break: broken || gap.contains(NAME_BREAKS),
            });
            broken = false;
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

    /// As if every word were an ordinary word: a one-word name never counts when it opens a sentence.
    fn every_word_common(_: &str) -> bool {
        true
    }

    /// The first name `table` finds in `text`, as written.
    fn first_name(table: &PlaceNames, text: &str, common: &dyn Fn(&str) -> bool) -> String {
        table.find(text, common)[0].written.clone()
    }

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
            city(8, "Austin", &[], 960_000),
            city(9, "Palace of Culture and Science of Atlantis", &[], 20_000),
        ])
    }

    #[test]
    fn finds_capitalised_names_longest_first_with_namesakes_by_population() {
        let table = table();
        let found = table.find(
            "Flying from New York to Paris, then #saint louis and St Louis",
            &every_word_common,
        );
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
        let mut builder = PlaceNamesBuilder::from_cities(cities.cities());
        let unknown = builder.add_known(
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
        let table = builder.build();
        assert!(!table.has_place(99));
        let found = table.find(
            "Picnic by the Eiffel Tower, then LHR tonight via Camden Town",
            &every_word_common,
        );
        let written: Vec<&str> = found.iter().map(|m| m.written.as_str()).collect();
        assert_eq!(written, ["Eiffel Tower", "LHR", "Camden Town"]);
        // A listed name of two words or more counts in lower case too.
        assert_eq!(
            first_name(&table, "picnic by the eiffel tower", &every_word_common),
            "eiffel tower"
        );
        assert_eq!(found[0].places[0].id, 1);
        assert_eq!((found[1].places[0].id, found[1].places[0].share), (7, 0.9));
        // The city's own coordinates, so the engine finds the stored city at distance 0.
        assert_eq!(found[2].places[0].lat, 7.0);
        let arch = &table.find("Under Marble Arch", &every_word_common)[0];
        let shares: Vec<(CityId, f32)> = arch.places.iter().map(|p| (p.id, p.share)).collect();
        assert_eq!(shares, [(7, 0.6), (1, 0.2)]);
        // Codes only in capitals, and not in a run of capitals.
        assert!(table.find("lhr tonight", &every_word_common).is_empty());
        assert!(table.find("Lhr tonight", &every_word_common).is_empty());
        assert!(table.find("OMG LHR AGAIN", &every_word_common).is_empty());
        assert_eq!(
            first_name(&table, "Stuck at LHR again", &every_word_common),
            "LHR"
        );
        assert_eq!(first_name(&table, "LHR again", &every_word_common), "LHR");
    }

    #[test]
    fn lowercase_words_short_names_and_partial_names_are_not_places() {
        let table = table();
        assert!(table
            .find("reading a book about york", &every_word_common)
            .is_empty());
        // "NYC" is shorter than MIN_NAME_CHARS; "Newark" is not in the table.
        assert!(table.find("NYC or Newark", &every_word_common).is_empty());
        // A capitalised single word opening a sentence is any word; within a sentence or as a hashtag it is
        // a place.
        assert!(table
            .find(
                "Reading in the park. Paris! Reading again",
                &every_word_common
            )
            .is_empty());
        assert_eq!(
            first_name(&table, "Off to Reading", &every_word_common),
            "Reading"
        );
        assert_eq!(
            first_name(&table, "#Reading is home", &every_word_common),
            "Reading"
        );
        assert_eq!(
            first_name(&table, "New York is big", &every_word_common),
            "New York"
        );
    }

    #[test]
    fn a_rare_word_opening_a_sentence_is_a_name_and_an_ordinary_one_is_not() {
        let table = table();
        let english =
            |word: &str| matches!(word.to_lowercase().as_str(), "reading" | "paris" | "off");
        // "Paris" and "Reading" are ordinary words of this vocabulary: opening a sentence, they say nothing.
        assert!(table
            .find("Reading in the park. Paris! Reading again", &english)
            .is_empty());
        // "Austin" is not: opening the post or a sentence, it is the place.
        let found = table.find("Austin at night. Austin again", &english);
        assert_eq!(
            found.iter().map(|m| m.written.as_str()).collect::<Vec<_>>(),
            ["Austin", "Austin"]
        );
        assert!(table.find("Austin at night", &every_word_common).is_empty());
        // Lower case is never a one-word name, rare or not.
        assert!(table.find("austin at night", &english).is_empty());
    }

    #[test]
    fn a_name_of_several_words_opening_a_sentence_needs_a_later_capital() {
        let table = table();
        assert!(table.find("New york is big", &every_word_common).is_empty());
        assert_eq!(
            first_name(&table, "New York is big", &every_word_common),
            "New York"
        );
        // Inside a sentence the first capital is enough.
        assert_eq!(
            first_name(&table, "Off to New york", &every_word_common),
            "New york"
        );
    }

    #[test]
    fn no_name_runs_across_a_comma_or_a_check_in() {
        let cities = CityTable::new(vec![
            city(3, "New York City", &["New York"], 8_000_000),
            city(10, "Paradise", &[], 190_000),
        ])
        .unwrap();
        let mut builder = PlaceNamesBuilder::from_cities(cities.cities());
        builder.add_known(
            &[known("New York New York", PlaceKind::Landmark, 10, 0.9)],
            &cities,
        );
        let table = builder.build();
        let ids = |text: &str| -> Vec<CityId> {
            table
                .find(text, &every_word_common)
                .iter()
                .map(|m| m.places[0].id)
                .collect()
        };
        // Written as one name, the casino; a check-in "City, State" is the city twice.
        assert_eq!(ids("Dinner at New York New York tonight"), [10]);
        assert_eq!(ids("Friday night @ New York, New York"), [3, 3]);
        assert_eq!(ids("Back in New York; New York is home"), [3, 3]);
        assert_eq!(ids("Bagels in New York @ New York"), [3, 3]);
    }

    #[test]
    fn names_of_up_to_eight_words_are_found() {
        let table = table();
        let found = table.find(
            "Night at the Palace of Culture and Science of Atlantis",
            &every_word_common,
        );
        assert_eq!(
            found[0].written,
            "Palace of Culture and Science of Atlantis"
        );
    }
}
