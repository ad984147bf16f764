//! A read-only map from names to the places bearing them, laid out so that it is saved and loaded in a few
//! bulk copies: every key back to back in one string, sorted, with the places of key `i` at
//! `places[place_ends[i - 1]..place_ends[i]]`.
//!
//! A `HashMap<String, Vec<Place>>` of the world's ~400,000 names costs two allocations and a hash per name
//! to build, which is most of the 0.5-0.8 s the gazetteer's names took to read at every start; this layout
//! loads with a handful of allocations (see [`super::names_file`]) and finds a name by binary search, which
//! is fast enough for the few dozen word windows a post has.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::mentions::Place;

/// Sorted names and their places (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NameMap {
    /// Every name, sorted by bytes, back to back.
    keys: String,
    /// Where name `i` ends in `keys` (it starts where name `i - 1` ends).
    key_ends: Vec<u32>,
    /// Where name `i`'s places end in `places`.
    place_ends: Vec<u32>,
    /// The places, grouped by name in name order.
    places: Vec<Place>,
}

impl NameMap {
    /// The map of `named`; each name's places keep their order.
    pub fn new<S: AsRef<str>>(named: HashMap<S, Vec<Place>, impl std::hash::BuildHasher>) -> Self {
        let mut entries: Vec<(S, Vec<Place>)> = named.into_iter().collect();
        entries.sort_unstable_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        let mut map = Self {
            keys: String::with_capacity(entries.iter().map(|(k, _)| k.as_ref().len()).sum()),
            key_ends: Vec::with_capacity(entries.len()),
            place_ends: Vec::with_capacity(entries.len()),
            places: Vec::with_capacity(entries.iter().map(|(_, p)| p.len()).sum()),
        };
        for (key, places) in entries {
            map.keys.push_str(key.as_ref());
            map.key_ends.push(offset(map.keys.len()));
            map.places.extend(places);
            map.place_ends.push(offset(map.places.len()));
        }
        map
    }

    /// The places named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&[Place]> {
        let (mut low, mut high) = (0, self.key_ends.len());
        while low < high {
            let middle = (low + high) / 2;
            match self.key(middle).cmp(name) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Some(self.places_of(middle)),
            }
        }
        None
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.key_ends.len()
    }

    /// Whether it holds no name.
    pub fn is_empty(&self) -> bool {
        self.key_ends.is_empty()
    }

    /// Whether every offset stays inside the map and the names are strictly sorted: what a map read from
    /// a file must satisfy before [`Self::get`] may index it.
    pub fn is_consistent(&self) -> bool {
        let ascending = |ends: &[u32], len: usize| {
            ends.windows(2).all(|w| w[0] <= w[1]) && ends.last().map_or(0, |&e| e as usize) == len
        };
        self.key_ends.len() == self.place_ends.len()
            && ascending(&self.key_ends, self.keys.len())
            && ascending(&self.place_ends, self.places.len())
            && self
                .key_ends
                .iter()
                .all(|&e| self.keys.is_char_boundary(e as usize))
            && (1..self.len()).all(|i| self.key(i - 1) < self.key(i))
    }

    fn key(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] };
        &self.keys[start as usize..self.key_ends[i] as usize]
    }

    fn places_of(&self, i: usize) -> &[Place] {
        let start = if i == 0 { 0 } else { self.place_ends[i - 1] };
        &self.places[start as usize..self.place_ends[i] as usize]
    }
}

/// A length as a stored offset: the maps hold tens of megabytes at most.
fn offset(len: usize) -> u32 {
    u32::try_from(len).expect("a name map under 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(id: u64) -> Place {
        Place {
            id,
            lat: id as f64,
            lon: -(id as f64),
            share: 1.0,
            known: false,
        }
    }

    #[test]
    fn finds_every_name_and_nothing_else() {
        let mut named: HashMap<String, Vec<Place>> = HashMap::new();
        for (i, name) in ["paris", "new york", "york", "zürich", "a", "paris texas"]
            .iter()
            .enumerate()
        {
            named.insert(
                name.to_string(),
                vec![place(i as u64), place(100 + i as u64)],
            );
        }
        let map = NameMap::new(named.clone());
        assert_eq!(map.len(), 6);
        assert!(map.is_consistent());
        for (name, places) in &named {
            assert_eq!(map.get(name), Some(places.as_slice()), "{name}");
        }
        for absent in ["", "pari", "parisx", "new", "zz", "york "] {
            assert_eq!(map.get(absent), None, "{absent:?}");
        }
        assert!(NameMap::new(HashMap::<String, Vec<Place>>::new())
            .get("paris")
            .is_none());
    }

    #[test]
    fn offsets_that_leave_the_map_are_inconsistent() {
        let mut named: HashMap<&str, Vec<Place>> = HashMap::new();
        named.insert("paris", vec![place(1)]);
        named.insert("york", vec![place(2)]);
        let good = NameMap::new(named);
        let mut bad = good.clone();
        bad.key_ends[1] += 1;
        assert!(!bad.is_consistent());
        let mut bad = good.clone();
        bad.place_ends[0] = 5;
        assert!(!bad.is_consistent());
        let mut unsorted = good.clone();
        unsorted.keys = "yorkparis".into();
        unsorted.key_ends = vec![4, 9];
        assert!(!unsorted.is_consistent());
    }
}
