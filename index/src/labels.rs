//! The durable log of labels: every city a store knows and every labelled post it was given.
//!
//! A store's generations (model + index) are derived data; the label log is the source they are built
//! from, so it lives beside them and outlives them. Every addition is appended in one sled transaction
//! and flushed before [`LabelLog::append`] returns: a label is acknowledged only once it is on disk.
//!
//! | tree         | key                          | value                                   |
//! |--------------|------------------------------|-----------------------------------------|
//! | `labels`     | big-endian [`LabelSeq`]      | bincode of [`Label`]                    |
//! | `cities`     | big-endian [`CityId`]        | bincode of [`City`] (the latest record) |
//! | `post_keys`  | hash of (text, city)         | big-endian [`LabelSeq`] (deduplication) |
//! | `meta`       | `next_seq`                   | big-endian counter                      |
//!
//! Sequence numbers only grow, so "labels after `seq`" is a range scan: a generation records the last
//! sequence number it holds, and catching it up means applying the labels after it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, Transactional};
use sled::Tree;

use crate::error::{Result, StoreError};
use crate::records::{City, CityId};
use crate::store::{corrupt, decode_serde, decode_u64, encode_serde, transaction_error};

/// Position of a label in the log (first is 1; 0 means "none").
pub type LabelSeq = u64;

const LABELS: &str = "labels";
const CITIES: &str = "cities";
const POST_KEYS: &str = "post_keys";
const META: &str = "meta";
const NEXT_SEQ: &[u8] = b"next_seq";

/// A post labelled with the city it was written in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostLabel {
    /// What the author wrote.
    pub text: String,
    /// The city it was written in.
    pub city: CityId,
    /// Where the label came from: a file name, `rest`, ...
    pub source: String,
    /// When it was added, in seconds since the Unix epoch.
    pub added_at: u64,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Label {
    /// A city became known (or its record changed).
    City(City),
    /// A labelled post.
    Post(PostLabel),
}

/// What one [`LabelLog::append`] stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Appended {
    /// Cities added or changed, with their sequence numbers.
    pub cities: Vec<(LabelSeq, City)>,
    /// Posts added, with their sequence numbers.
    pub posts: Vec<(LabelSeq, PostLabel)>,
    /// Posts not stored because the same text was already labelled with the same city.
    pub duplicates: usize,
    /// Cities given again with an identical record (nothing stored).
    pub unchanged_cities: usize,
}

/// The label log of a store directory (`dir/labels.sled`).
#[derive(Clone)]
pub struct LabelLog {
    dir: PathBuf,
    db: sled::Db,
    labels: Tree,
    cities: Tree,
    post_keys: Tree,
    meta: Tree,
}

impl std::fmt::Debug for LabelLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelLog").field("dir", &self.dir).finish()
    }
}

impl LabelLog {
    /// Opens (creating if needed) the log in `dir/labels.sled`. sled takes an exclusive lock: a second
    /// process opening the same store fails with [`StoreError::Open`] (after waiting
    /// [`crate::sled_open::LOCK_WAIT`] in case the holder is closing).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("labels.sled");
        let db = crate::sled_open::open_sled(&path)?;
        Ok(Self {
            labels: db.open_tree(LABELS)?,
            cities: db.open_tree(CITIES)?,
            post_keys: db.open_tree(POST_KEYS)?,
            meta: db.open_tree(META)?,
            db,
            dir,
        })
    }

    /// Whether `dir` holds a label log.
    pub fn exists(dir: &Path) -> bool {
        dir.join("labels.sled").is_dir()
    }

    /// Appends cities and posts in one transaction and flushes it to disk. A city already known with an
    /// identical record and a post already labelled with the same city are skipped (counted). Every post's
    /// city must be known: among `cities` or already in the log.
    pub fn append(&self, cities: &[City], posts: &[PostLabel]) -> Result<Appended> {
        for post in posts {
            let known = self.cities.contains_key(post.city.to_be_bytes())?
                || cities.iter().any(|c| c.id == post.city);
            if !known {
                return Err(StoreError::Encode {
                    what: "label",
                    reason: format!(
                        "post {:?} names city {} which the log does not know",
                        post.text, post.city
                    ),
                });
            }
        }
        let mut encoded_cities = Vec::with_capacity(cities.len());
        for city in cities {
            encoded_cities.push((
                city,
                encode_serde("city", city)?,
                encode_serde("label", &Label::City(city.clone()))?,
            ));
        }
        let mut encoded_posts = Vec::with_capacity(posts.len());
        for post in posts {
            encoded_posts.push((
                post,
                post_key(&post.text, post.city),
                encode_serde("label", &Label::Post(post.clone()))?,
            ));
        }
        let appended = (&self.labels, &self.cities, &self.post_keys, &self.meta)
            .transaction(|(labels, city_tree, keys, meta)| {
                let mut next = match meta.get(NEXT_SEQ)? {
                    Some(bytes) => decode_u64(META, NEXT_SEQ, &bytes)
                        .map_err(ConflictableTransactionError::Abort)?,
                    None => 1,
                };
                let mut out = Appended::default();
                for (city, record, label) in &encoded_cities {
                    let key = city.id.to_be_bytes();
                    if city_tree
                        .get(key)?
                        .is_some_and(|old| old.as_ref() == record.as_slice())
                    {
                        out.unchanged_cities += 1;
                        continue;
                    }
                    city_tree.insert(&key, record.as_slice())?;
                    labels.insert(&next.to_be_bytes(), label.as_slice())?;
                    out.cities.push((next, (*city).clone()));
                    next += 1;
                }
                for (post, key, label) in &encoded_posts {
                    if keys.get(key)?.is_some() {
                        out.duplicates += 1;
                        continue;
                    }
                    keys.insert(key, &next.to_be_bytes())?;
                    labels.insert(&next.to_be_bytes(), label.as_slice())?;
                    out.posts.push((next, (*post).clone()));
                    next += 1;
                }
                meta.insert(NEXT_SEQ, &next.to_be_bytes())?;
                Ok(out)
            })
            .map_err(transaction_error)?;
        self.db.flush()?;
        Ok(appended)
    }

    /// The city with this id, if the log knows it.
    pub fn city(&self, id: CityId) -> Result<Option<City>> {
        self.cities
            .get(id.to_be_bytes())?
            .map(|bytes| decode_serde(CITIES, &id, &bytes))
            .transpose()
    }

    /// Every known city, by id.
    pub fn cities(&self) -> Result<Vec<City>> {
        self.cities
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                let id = <[u8; 8]>::try_from(key.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| corrupt(CITIES, &key, "key is not an 8-byte id"))?;
                decode_serde(CITIES, &id, &value)
            })
            .collect()
    }

    /// Number of known cities.
    pub fn city_count(&self) -> usize {
        self.cities.len()
    }

    /// Whether a post with this text is already labelled with this city.
    pub fn has_post(&self, text: &str, city: CityId) -> Result<bool> {
        Ok(self.post_keys.contains_key(post_key(text, city))?)
    }

    /// Every label after `seq`, in order.
    pub fn labels_after(
        &self,
        seq: LabelSeq,
    ) -> impl Iterator<Item = Result<(LabelSeq, Label)>> + '_ {
        self.labels.range((seq + 1).to_be_bytes()..).map(|entry| {
            let (key, value) = entry?;
            let seq = <[u8; 8]>::try_from(key.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt(LABELS, &key, "key is not an 8-byte sequence number"))?;
            Ok((seq, decode_serde(LABELS, &seq, &value)?))
        })
    }

    /// Every labelled post, in order, with its sequence number.
    pub fn posts(&self) -> Result<Vec<(LabelSeq, PostLabel)>> {
        self.labels_after(0)
            .filter_map(|entry| match entry {
                Ok((seq, Label::Post(post))) => Some(Ok((seq, post))),
                Ok((_, Label::City(_))) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
    }

    /// Number of labelled posts.
    pub fn post_count(&self) -> usize {
        self.post_keys.len()
    }

    /// The last sequence number handed out (0 for an empty log).
    pub fn last_seq(&self) -> Result<LabelSeq> {
        Ok(match self.meta.get(NEXT_SEQ)? {
            Some(bytes) => decode_u64(META, NEXT_SEQ, &bytes)? - 1,
            None => 0,
        })
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The deduplication key of a post: a 64-bit FNV-1a hash of its text, then its city id (so a hash
/// collision between two texts of different cities cannot merge them).
fn post_key(text: &str, city: CityId) -> [u8; 16] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&city.to_be_bytes());
    key[8..].copy_from_slice(&hash.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn city(id: CityId, name: &str) -> City {
        City {
            id,
            name: name.into(),
            admin1: None,
            country: "Testland".into(),
            country_code: "TL".into(),
            lat: 1.0,
            lon: 2.0,
            population: 0,
            alternate_names: vec![],
        }
    }

    fn post(text: &str, city: CityId) -> PostLabel {
        PostLabel {
            text: text.into(),
            city,
            source: "test".into(),
            added_at: 7,
        }
    }

    #[test]
    fn labels_survive_reopening_in_order_and_duplicates_are_stored_once() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let log = LabelLog::open(tmp.path()).unwrap();
            let first = log
                .append(
                    &[city(1, "A"), city(2, "B")],
                    &[post("a post", 1), post("b post", 2)],
                )
                .unwrap();
            assert_eq!(first.cities.len(), 2);
            assert_eq!(
                first.posts.iter().map(|p| p.0).collect::<Vec<_>>(),
                vec![3, 4]
            );
            let again = log
                .append(
                    &[city(1, "A")],
                    &[post("a post", 1), post("a post", 2), post("new", 1)],
                )
                .unwrap();
            assert_eq!((again.unchanged_cities, again.duplicates), (1, 1));
            assert_eq!(
                again.posts.len(),
                2,
                "same text, other city is another label"
            );
            let err = log.append(&[], &[post("x", 99)]).unwrap_err();
            assert!(err.to_string().contains("99"), "{err}");
        }
        let log = LabelLog::open(tmp.path()).unwrap();
        assert_eq!(log.last_seq().unwrap(), 6);
        assert_eq!(log.post_count(), 4);
        assert_eq!(log.city_count(), 2);
        let after: Vec<LabelSeq> = log.labels_after(4).map(|l| l.unwrap().0).collect();
        assert_eq!(after, vec![5, 6]);
        assert!(log.has_post("new", 1).unwrap());
        assert_eq!(log.city(2).unwrap().unwrap().name, "B");
        // A changed record of a known city is a new label.
        let changed = log.append(&[city(2, "B-renamed")], &[]).unwrap();
        assert_eq!(changed.cities[0].0, 7);
        assert_eq!(log.city(2).unwrap().unwrap().name, "B-renamed");
    }

    #[test]
    fn a_second_opener_is_refused_while_the_first_holds_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let _held = LabelLog::open(tmp.path()).unwrap();
        // sled's lock is per process; a second handle in the same process also fails to lock.
        let second = LabelLog::open(tmp.path());
        assert!(matches!(second, Err(StoreError::Open { .. })), "{second:?}");
    }
}
