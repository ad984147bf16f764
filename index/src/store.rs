//! The durable record store: cities, support posts and vectors in sled.
//!
//! sled is the source of truth of the whole index: everything the HNSW graph holds can be rebuilt
//! from the `vectors` tree, so every write lands here first. The trees are:
//!
//! | tree                    | key                              | value                              |
//! |-------------------------|----------------------------------|------------------------------------|
//! | `cities`                | big-endian [`CityId`]            | bincode of [`City`]                |
//! | `support_posts`         | big-endian [`PostId`]            | bincode of [`SupportPost`]         |
//! | `support_posts_by_city` | big-endian city id ++ post id    | empty (secondary index)            |
//! | `vectors`               | big-endian [`VectorId`]          | fixed layout, see below            |
//! | `meta`                  | name                             | model version, dimension, counters |
//!
//! Big-endian keys make sled's byte order the numeric order, so "vectors after a watermark" is a
//! range scan. Ids come from counters kept in `meta` and bumped in the same sled transaction as the
//! records they number: after a crash either both are there or neither, so an id is never handed
//! out twice.
//!
//! A vector value is `[layout version: u8 = 1][kind: u8][has post: u8][city: u64 LE][post: u64 LE]`
//! followed by the components as `f32` little-endian. The fixed layout lets the graph loader read
//! the metadata of every vector without decoding the vectors.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::Tree;

use crate::error::{Result, StoreError};
use crate::records::{
    City, CityId, PostId, SupportPost, VectorId, VectorKind, VectorMeta, VectorRecord,
};

const CITIES: &str = "cities";
const SUPPORT_POSTS: &str = "support_posts";
const POSTS_BY_CITY: &str = "support_posts_by_city";
const VECTORS: &str = "vectors";
const META: &str = "meta";

const MODEL_VERSION: &[u8] = b"model_version";
const DIMENSION: &[u8] = b"dimension";
const NEXT_VECTOR_ID: &[u8] = b"next_vector_id";
const NEXT_POST_ID: &[u8] = b"next_post_id";
const DUMP_WATERMARK: &[u8] = b"dump_watermark";
const LABEL_WATERMARK: &[u8] = b"label_watermark";

/// Vectors are written in transactions of at most this many, to bound the memory a transaction
/// holds; each chunk is atomic with its id counter.
const WRITE_CHUNK: usize = 1024;

const VECTOR_LAYOUT_V1: u8 = 1;
const VECTOR_HEADER_LEN: usize = 1 + 1 + 1 + 8 + 8;

/// The sled database of one index directory. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    cities: Tree,
    support_posts: Tree,
    posts_by_city: Tree,
    vectors: Tree,
    meta: Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Store {
    /// Opens the store of the index directory `dir` (the database is `dir/records.sled`), creating
    /// both if missing.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("records.sled");
        let db = crate::sled_open::open_sled(&path)?;
        Ok(Store {
            cities: db.open_tree(CITIES)?,
            support_posts: db.open_tree(SUPPORT_POSTS)?,
            posts_by_city: db.open_tree(POSTS_BY_CITY)?,
            vectors: db.open_tree(VECTORS)?,
            meta: db.open_tree(META)?,
            db,
            dir,
        })
    }

    /// The index directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes every write so far durable (sled flush + fsync).
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    // ---------------------------------------------------------------- cities

    /// Inserts or replaces cities, atomically.
    pub fn put_cities(&self, cities: &[City]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for city in cities {
            batch.insert(&city.id.to_be_bytes()[..], encode_serde("city", city)?);
        }
        self.cities.apply_batch(batch)?;
        Ok(())
    }

    /// The city with this GeoNames id, if stored.
    pub fn city(&self, id: CityId) -> Result<Option<City>> {
        self.cities
            .get(id.to_be_bytes())?
            .map(|bytes| decode_serde(CITIES, &id, &bytes))
            .transpose()
    }

    /// All stored cities, in id order.
    pub fn cities(&self) -> Result<Vec<City>> {
        self.cities
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                let id = decode_id(CITIES, &key)?;
                decode_serde(CITIES, &id, &value)
            })
            .collect()
    }

    /// Number of stored cities (a scan: sled keeps no count).
    pub fn city_count(&self) -> usize {
        self.cities.len()
    }

    // ---------------------------------------------------------- support posts

    /// Stores support posts atomically and returns their new ids, in input order.
    pub fn add_support_posts(&self, posts: &[SupportPost]) -> Result<Vec<PostId>> {
        if posts.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = posts
            .iter()
            .map(|post| encode_serde("support post", post))
            .collect::<Result<Vec<_>>>()?;
        let first = (&self.support_posts, &self.posts_by_city, &self.meta)
            .transaction(|(posts_tree, by_city, meta)| {
                let first = read_counter(meta.get(NEXT_POST_ID)?, NEXT_POST_ID)
                    .map_err(ConflictableTransactionError::Abort)?;
                for (offset, (post, value)) in posts.iter().zip(&encoded).enumerate() {
                    let id = first + offset as u64;
                    posts_tree.insert(&id.to_be_bytes()[..], value.as_slice())?;
                    by_city.insert(&city_post_key(post.city, id)[..], &[][..])?;
                }
                let next = first + posts.len() as u64;
                meta.insert(NEXT_POST_ID, &next.to_be_bytes()[..])?;
                Ok(first)
            })
            .map_err(transaction_error)?;
        Ok((first..first + posts.len() as u64).collect())
    }

    /// The support post with this id, if stored.
    pub fn support_post(&self, id: PostId) -> Result<Option<SupportPost>> {
        self.support_posts
            .get(id.to_be_bytes())?
            .map(|bytes| decode_serde(SUPPORT_POSTS, &id, &bytes))
            .transpose()
    }

    /// The support posts written in `city`, with their ids, in id order.
    pub fn support_posts_of(&self, city: CityId) -> Result<Vec<(PostId, SupportPost)>> {
        let mut found = Vec::new();
        for entry in self.posts_by_city.scan_prefix(city.to_be_bytes()) {
            let (key, _) = entry?;
            let id = key
                .get(8..)
                .ok_or_else(|| corrupt(POSTS_BY_CITY, &key, "key shorter than 16 bytes"))
                .and_then(|post_key| decode_id(POSTS_BY_CITY, post_key))?;
            let post = self.support_post(id)?.ok_or_else(|| {
                corrupt(
                    POSTS_BY_CITY,
                    &key,
                    "indexes a support post that is not stored",
                )
            })?;
            found.push((id, post));
        }
        Ok(found)
    }

    /// The support posts with an id above `watermark`, in id order (what a lexical index that holds the
    /// posts up to `watermark` lacks).
    pub fn support_posts_after(
        &self,
        watermark: Option<PostId>,
    ) -> impl Iterator<Item = Result<(PostId, SupportPost)>> + '_ {
        let start = watermark.map_or(Bound::Unbounded, |w| Bound::Excluded(w.to_be_bytes()));
        self.support_posts
            .range::<[u8; 8], _>((start, Bound::Unbounded))
            .map(|entry| {
                let (key, bytes) = entry?;
                let id = decode_id(SUPPORT_POSTS, &key)?;
                Ok((id, decode_serde(SUPPORT_POSTS, &id, &bytes)?))
            })
    }

    /// Number of stored support posts (a scan).
    pub fn support_post_count(&self) -> usize {
        self.support_posts.len()
    }

    // ------------------------------------------------------------------ meta

    /// Records the version of the model whose embeddings the store holds.
    pub fn set_model_version(&self, version: &str) -> Result<()> {
        self.meta.insert(MODEL_VERSION, version.as_bytes())?;
        Ok(())
    }

    /// The version of the model whose embeddings the store holds, if recorded.
    pub fn model_version(&self) -> Result<Option<String>> {
        self.meta
            .get(MODEL_VERSION)?
            .map(|bytes| {
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| corrupt(META, MODEL_VERSION, "model version is not UTF-8"))
            })
            .transpose()
    }

    /// Fails with [`StoreError::ModelMismatch`] when the store holds embeddings of another model
    /// than `expected`. A store with no recorded version passes.
    pub fn check_model_version(&self, expected: &str) -> Result<()> {
        match self.model_version()? {
            Some(store) if store != expected => Err(StoreError::ModelMismatch {
                store,
                expected: expected.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// The dimension of the stored vectors, set by the first insert.
    pub fn dimension(&self) -> Result<Option<usize>> {
        self.meta
            .get(DIMENSION)?
            .map(|bytes| decode_u64(META, DIMENSION, &bytes).map(|d| d as usize))
            .transpose()
    }

    /// Records the watermark of the last graph dump (informational: the dump's own manifest is
    /// what reload trusts).
    pub fn set_dump_watermark(&self, watermark: VectorId) -> Result<()> {
        self.meta
            .insert(DUMP_WATERMARK, &watermark.to_be_bytes()[..])?;
        Ok(())
    }

    /// The watermark of the last graph dump, if one was recorded.
    pub fn dump_watermark(&self) -> Result<Option<VectorId>> {
        self.meta
            .get(DUMP_WATERMARK)?
            .map(|bytes| decode_u64(META, DUMP_WATERMARK, &bytes))
            .transpose()
    }

    /// Records that every label of the store's label log up to `seq` is in this index (see
    /// [`crate::labels`]); made durable with the next [`Store::flush`].
    pub fn set_label_watermark(&self, seq: u64) -> Result<()> {
        self.meta.insert(LABEL_WATERMARK, &seq.to_be_bytes()[..])?;
        Ok(())
    }

    /// The last label of the label log this index holds (0 when none was recorded).
    pub fn label_watermark(&self) -> Result<u64> {
        Ok(self
            .meta
            .get(LABEL_WATERMARK)?
            .map(|bytes| decode_u64(META, LABEL_WATERMARK, &bytes))
            .transpose()?
            .unwrap_or(0))
    }

    // --------------------------------------------------------------- vectors

    /// Stores vectors as given and returns their new ids, strictly increasing in input order.
    /// ([`crate::VectorIndex::insert`] normalises them first and adds them to the live graph; a
    /// vector written here directly reaches the graph at its next reload or rebuild.)
    ///
    /// All vectors must have the store's dimension (the first insert into an empty store sets it)
    /// and finite components; a bad vector rejects the whole call before anything is written.
    /// Vectors are written in chunks of 1024, each chunk atomically with the id counter, so a crash
    /// can keep a prefix of the call's chunks but never reuses an id.
    pub fn add_vectors(&self, vectors: &[(VectorMeta, Vec<f32>)]) -> Result<Vec<VectorId>> {
        let Some((_, first)) = vectors.first() else {
            return Ok(Vec::new());
        };
        let dimension = self.dimension()?.unwrap_or(first.len());
        for (index, (_, vector)) in vectors.iter().enumerate() {
            check_vector(index, vector, dimension)?;
        }
        let mut ids = Vec::with_capacity(vectors.len());
        for chunk in vectors.chunks(WRITE_CHUNK) {
            let encoded: Vec<Vec<u8>> = chunk
                .iter()
                .map(|(meta, vector)| encode_vector(meta, vector))
                .collect();
            let first_id = (&self.vectors, &self.meta)
                .transaction(|(vector_tree, meta)| {
                    match meta.get(DIMENSION)? {
                        Some(bytes) => {
                            let stored = decode_u64(META, DIMENSION, &bytes)
                                .map_err(ConflictableTransactionError::Abort)?;
                            if stored != dimension as u64 {
                                return Err(ConflictableTransactionError::Abort(
                                    StoreError::DimensionMismatch {
                                        expected: stored as usize,
                                        got: dimension,
                                    },
                                ));
                            }
                        }
                        None => {
                            meta.insert(DIMENSION, &(dimension as u64).to_be_bytes()[..])?;
                        }
                    }
                    let first_id = read_counter(meta.get(NEXT_VECTOR_ID)?, NEXT_VECTOR_ID)
                        .map_err(ConflictableTransactionError::Abort)?;
                    for (offset, value) in encoded.iter().enumerate() {
                        let id = first_id + offset as u64;
                        vector_tree.insert(&id.to_be_bytes()[..], value.as_slice())?;
                    }
                    let next = first_id + encoded.len() as u64;
                    meta.insert(NEXT_VECTOR_ID, &next.to_be_bytes()[..])?;
                    Ok(first_id)
                })
                .map_err(transaction_error)?;
            ids.extend(first_id..first_id + chunk.len() as u64);
        }
        Ok(ids)
    }

    /// The vector with this id, if stored.
    pub fn vector(&self, id: VectorId) -> Result<Option<VectorRecord>> {
        self.vectors
            .get(id.to_be_bytes())?
            .map(|bytes| decode_vector(id, &bytes))
            .transpose()
    }

    /// The vectors with an id above `watermark`, in id order. `vectors_after(0)` lists them all.
    pub fn vectors_after(&self, watermark: VectorId) -> VectorIter {
        self.vectors_between(watermark, VectorId::MAX)
    }

    /// The vectors with `after < id <= up_to`, in id order.
    pub fn vectors_between(&self, after: VectorId, up_to: VectorId) -> VectorIter {
        let inner = (after < up_to).then(|| {
            self.vectors.range::<&[u8], _>((
                Bound::Excluded(&after.to_be_bytes()[..]),
                Bound::Included(&up_to.to_be_bytes()[..]),
            ))
        });
        VectorIter { inner }
    }

    /// Ids and metadata of all stored vectors, in id order, without decoding the vectors.
    pub fn vector_metas(&self) -> impl Iterator<Item = Result<(VectorId, VectorMeta)>> {
        self.vectors.iter().map(|entry| {
            let (key, value) = entry?;
            let id = decode_id(VECTORS, &key)?;
            Ok((id, decode_vector_meta(id, &value)?))
        })
    }

    /// Number of stored vectors (a scan).
    pub fn vector_count(&self) -> usize {
        self.vectors.len()
    }

    /// The highest stored vector id, or `None` when no vector is stored.
    pub fn max_vector_id(&self) -> Result<Option<VectorId>> {
        self.vectors
            .last()?
            .map(|(key, _)| decode_id(VECTORS, &key))
            .transpose()
    }

    /// The id the next stored vector will get (ids are never reused, so this is above every id
    /// ever handed out).
    pub fn next_vector_id(&self) -> Result<VectorId> {
        read_counter(self.meta.get(NEXT_VECTOR_ID)?, NEXT_VECTOR_ID)
    }

    /// Removes the vectors of `city`, atomically, and returns their ids. A scan over all vectors.
    pub fn remove_vectors_of_city(&self, city: CityId) -> Result<Vec<VectorId>> {
        let mut removed = Vec::new();
        let mut batch = sled::Batch::default();
        for entry in self.vector_metas() {
            let (id, meta) = entry?;
            if meta.city == city {
                batch.remove(&id.to_be_bytes()[..]);
                removed.push(id);
            }
        }
        self.vectors.apply_batch(batch)?;
        Ok(removed)
    }

    /// Removes every vector and forgets the dimension, keeping cities, support posts and the id
    /// counters: the first step of re-embedding everything with a new model.
    pub fn clear_vectors(&self) -> Result<()> {
        self.vectors.clear()?;
        self.meta.remove(DIMENSION)?;
        self.meta.remove(DUMP_WATERMARK)?;
        Ok(())
    }
}

/// Iterator over stored vectors, from [`Store::vectors_after`] and [`Store::vectors_between`].
pub struct VectorIter {
    inner: Option<sled::Iter>,
}

impl Iterator for VectorIter {
    type Item = Result<VectorRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = self.inner.as_mut()?.next()?;
        Some(entry.map_err(StoreError::from).and_then(|(key, value)| {
            let id = decode_id(VECTORS, &key)?;
            decode_vector(id, &value)
        }))
    }
}

/// Checks a vector's length against `dimension` and its components for NaN and infinities.
pub(crate) fn check_vector(index: usize, vector: &[f32], dimension: usize) -> Result<()> {
    if vector.is_empty() {
        return Err(StoreError::ZeroVector { index });
    }
    if vector.len() != dimension {
        return Err(StoreError::DimensionMismatch {
            expected: dimension,
            got: vector.len(),
        });
    }
    if let Some(position) = vector.iter().position(|x| !x.is_finite()) {
        return Err(StoreError::NonFiniteVector { index, position });
    }
    Ok(())
}

fn city_post_key(city: CityId, post: PostId) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&city.to_be_bytes());
    key[8..].copy_from_slice(&post.to_be_bytes());
    key
}

pub(crate) fn transaction_error(error: TransactionError<StoreError>) -> StoreError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => StoreError::Sled(error),
    }
}

pub(crate) fn corrupt(tree: &'static str, key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree,
        key: printable_key(key),
        reason: reason.into(),
    }
}

fn printable_key(key: &[u8]) -> String {
    match <[u8; 8]>::try_from(key) {
        Ok(bytes) => u64::from_be_bytes(bytes).to_string(),
        Err(_) => String::from_utf8_lossy(key).into_owned(),
    }
}

fn decode_id(tree: &'static str, key: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(tree, key, "key is not an 8-byte id"))
}

pub(crate) fn decode_u64(tree: &'static str, key: &[u8], value: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(value)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(tree, key, "value is not an 8-byte integer"))
}

/// Reads an id counter; a missing counter starts at 1 so that 0 can mean "no id" in watermarks.
fn read_counter(value: Option<sled::IVec>, name: &[u8]) -> Result<u64> {
    match value {
        Some(bytes) => decode_u64(META, name, &bytes),
        None => Ok(1),
    }
}

pub(crate) fn encode_serde<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| {
        StoreError::Encode {
            what,
            reason: e.to_string(),
        }
    })
}

pub(crate) fn decode_serde<T: DeserializeOwned>(
    tree: &'static str,
    id: &u64,
    bytes: &[u8],
) -> Result<T> {
    let key = id.to_be_bytes();
    let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| corrupt(tree, &key, e.to_string()))?;
    if read != bytes.len() {
        return Err(corrupt(tree, &key, "trailing bytes after the record"));
    }
    Ok(value)
}

fn encode_vector(meta: &VectorMeta, vector: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(VECTOR_HEADER_LEN + 4 * vector.len());
    bytes.push(VECTOR_LAYOUT_V1);
    bytes.push(match meta.kind {
        VectorKind::Prompt => 0,
        VectorKind::Support => 1,
    });
    bytes.push(u8::from(meta.post.is_some()));
    bytes.extend_from_slice(&meta.city.to_le_bytes());
    bytes.extend_from_slice(&meta.post.unwrap_or(0).to_le_bytes());
    for x in vector {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes
}

fn decode_vector_meta(id: VectorId, bytes: &[u8]) -> Result<VectorMeta> {
    let key = id.to_be_bytes();
    let header = bytes
        .get(..VECTOR_HEADER_LEN)
        .ok_or_else(|| corrupt(VECTORS, &key, "value shorter than the vector header"))?;
    if header[0] != VECTOR_LAYOUT_V1 {
        return Err(corrupt(
            VECTORS,
            &key,
            format!("unknown vector layout version {}", header[0]),
        ));
    }
    let kind = match header[1] {
        0 => VectorKind::Prompt,
        1 => VectorKind::Support,
        other => {
            return Err(corrupt(
                VECTORS,
                &key,
                format!("unknown vector kind {other}"),
            ))
        }
    };
    let read_u64 = |range: std::ops::Range<usize>| {
        <[u8; 8]>::try_from(&header[range])
            .map(u64::from_le_bytes)
            .map_err(|_| corrupt(VECTORS, &key, "bad header"))
    };
    let city = read_u64(3..11)?;
    let post = match header[2] {
        0 => None,
        1 => Some(read_u64(11..19)?),
        other => return Err(corrupt(VECTORS, &key, format!("bad post flag {other}"))),
    };
    Ok(VectorMeta { city, kind, post })
}

fn decode_vector(id: VectorId, bytes: &[u8]) -> Result<VectorRecord> {
    let meta = decode_vector_meta(id, bytes)?;
    let body = &bytes[VECTOR_HEADER_LEN..];
    if !body.len().is_multiple_of(4) {
        return Err(corrupt(
            VECTORS,
            &id.to_be_bytes(),
            "vector body is not a whole number of f32",
        ));
    }
    let vector = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(VectorRecord { id, meta, vector })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn city(id: CityId, name: &str) -> City {
        City {
            id,
            name: name.to_string(),
            admin1: id.is_multiple_of(2).then(|| "Some Region".to_string()),
            country: "Country".to_string(),
            country_code: "CC".to_string(),
            lat: 12.5 + id as f64,
            lon: -3.25,
            population: id * 1000,
            alternate_names: vec![format!("{name}-alt"), format!("{name}-alt2")],
        }
    }

    fn meta(city: CityId, post: Option<PostId>) -> VectorMeta {
        VectorMeta {
            city,
            kind: if post.is_some() {
                VectorKind::Support
            } else {
                VectorKind::Prompt
            },
            post,
        }
    }

    #[test]
    fn round_trip_and_reopen_match_a_hashmap_reference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cities_ref: HashMap<CityId, City> = HashMap::new();
        let mut posts_ref: HashMap<PostId, SupportPost> = HashMap::new();
        let mut vectors_ref: HashMap<VectorId, (VectorMeta, Vec<f32>)> = HashMap::new();
        {
            let store = Store::open(dir.path()).expect("open");
            let cities: Vec<City> = (1..=20).map(|i| city(i * 7, &format!("c{i}"))).collect();
            store.put_cities(&cities).expect("put cities");
            cities_ref.extend(cities.iter().map(|c| (c.id, c.clone())));
            // Replacing a city keeps one record.
            let renamed = city(7, "renamed");
            store
                .put_cities(std::slice::from_ref(&renamed))
                .expect("replace");
            cities_ref.insert(7, renamed);

            let posts: Vec<SupportPost> = (0..30)
                .map(|i| SupportPost {
                    text: format!("post {i} ✓"),
                    city: 7 * (1 + i % 5),
                    source: "test".to_string(),
                })
                .collect();
            let post_ids = store.add_support_posts(&posts).expect("posts");
            posts_ref.extend(post_ids.iter().copied().zip(posts));

            let vectors: Vec<(VectorMeta, Vec<f32>)> = (0..50)
                .map(|i| {
                    let m = meta(
                        7 * (1 + i % 5),
                        (i % 2 == 0).then_some(post_ids[i as usize % post_ids.len()]),
                    );
                    (m, (0..8).map(|j| (i * 8 + j) as f32 * 0.01 - 1.0).collect())
                })
                .collect();
            let ids = store.add_vectors(&vectors).expect("vectors");
            vectors_ref.extend(ids.into_iter().zip(vectors));
            store.set_model_version("model-a").expect("version");
            store.flush().expect("flush");
        }
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.city_count(), cities_ref.len());
        for (id, expected) in &cities_ref {
            assert_eq!(store.city(*id).expect("city").as_ref(), Some(expected));
        }
        assert_eq!(store.city(123_456).expect("missing city"), None);
        let all = store.cities().expect("cities");
        assert_eq!(all.len(), cities_ref.len());
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));

        assert_eq!(store.support_post_count(), posts_ref.len());
        for (id, expected) in &posts_ref {
            assert_eq!(
                store.support_post(*id).expect("post").as_ref(),
                Some(expected)
            );
        }
        let of_14 = store.support_posts_of(14).expect("posts of city");
        let expected_14: Vec<PostId> = {
            let mut ids: Vec<PostId> = posts_ref
                .iter()
                .filter(|(_, p)| p.city == 14)
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            ids
        };
        assert_eq!(
            of_14.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            expected_14
        );

        assert_eq!(store.vector_count(), vectors_ref.len());
        assert_eq!(store.dimension().expect("dim"), Some(8));
        for (id, (m, v)) in &vectors_ref {
            let record = store.vector(*id).expect("vector").expect("present");
            assert_eq!(&record.meta, m);
            assert_eq!(&record.vector, v);
        }
        let listed: Vec<VectorRecord> =
            store.vectors_after(0).collect::<Result<_>>().expect("list");
        assert_eq!(listed.len(), vectors_ref.len());
        assert!(listed.windows(2).all(|w| w[0].id < w[1].id));
        let max = store.max_vector_id().expect("max").expect("some");
        assert_eq!(max, listed.last().expect("last").id);
        let after: Vec<VectorId> = store
            .vectors_after(max - 3)
            .map(|r| r.map(|r| r.id))
            .collect::<Result<_>>()
            .expect("after");
        assert_eq!(after, vec![max - 2, max - 1, max]);
        assert_eq!(store.vectors_between(max, max - 5).count(), 0);
        assert_eq!(
            store.model_version().expect("v").as_deref(),
            Some("model-a")
        );
    }

    #[test]
    fn ids_stay_monotonic_across_reopen_and_removal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = |x: f32| (meta(1, None), vec![x, 1.0, 2.0]);
        let first = {
            let store = Store::open(dir.path()).expect("open");
            let ids = store.add_vectors(&[v(0.0), v(1.0), v(2.0)]).expect("add");
            assert_eq!(ids, vec![1, 2, 3]);
            let removed = store.remove_vectors_of_city(1).expect("remove");
            assert_eq!(removed, vec![1, 2, 3]);
            assert_eq!(store.vector_count(), 0);
            let posts = store
                .add_support_posts(&[SupportPost {
                    text: "t".into(),
                    city: 1,
                    source: "s".into(),
                }])
                .expect("post");
            assert_eq!(posts, vec![1]);
            ids
        };
        let store = Store::open(dir.path()).expect("reopen");
        let ids = store.add_vectors(&[v(3.0), v(4.0)]).expect("add again");
        assert!(
            ids[0] > *first.last().expect("ids"),
            "{ids:?} after {first:?}"
        );
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(store.next_vector_id().expect("next"), ids[1] + 1);
        let posts = store
            .add_support_posts(&[SupportPost {
                text: "u".into(),
                city: 2,
                source: "s".into(),
            }])
            .expect("post");
        assert_eq!(posts, vec![2]);
        // A big batch spans several transactions and still numbers contiguously.
        let many: Vec<_> = (0..3000).map(|i| v(i as f32)).collect();
        let ids = store.add_vectors(&many).expect("many");
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn bad_vectors_are_rejected_with_typed_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .add_vectors(&[(meta(1, None), vec![1.0, 2.0, 3.0])])
            .expect("first insert sets the dimension");
        let err = store
            .add_vectors(&[(meta(1, None), vec![1.0, 2.0])])
            .expect_err("wrong dimension");
        assert!(
            matches!(
                err,
                StoreError::DimensionMismatch {
                    expected: 3,
                    got: 2
                }
            ),
            "{err}"
        );
        let err = store
            .add_vectors(&[
                (meta(1, None), vec![1.0, 2.0, 3.0]),
                (meta(1, None), vec![1.0, f32::NAN, 3.0]),
            ])
            .expect_err("NaN");
        assert!(
            matches!(
                err,
                StoreError::NonFiniteVector {
                    index: 1,
                    position: 1
                }
            ),
            "{err}"
        );
        let err = store
            .add_vectors(&[(meta(1, None), vec![f32::INFINITY, 0.0, 0.0])])
            .expect_err("infinity");
        assert!(matches!(err, StoreError::NonFiniteVector { .. }), "{err}");
        // Nothing of the rejected batches was written.
        assert_eq!(store.vector_count(), 1);
    }

    #[test]
    fn model_version_mismatch_says_to_rebuild() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.check_model_version("any").expect("no version yet");
        store.set_model_version("contrastgeo-2024-01").expect("set");
        store
            .check_model_version("contrastgeo-2024-01")
            .expect("same version");
        let err = store
            .check_model_version("contrastgeo-2025-06")
            .expect_err("mismatch");
        assert!(matches!(err, StoreError::ModelMismatch { .. }));
        let message = err.to_string();
        assert!(message.contains("contrastgeo-2024-01"), "{message}");
        assert!(message.contains("contrastgeo-2025-06"), "{message}");
        assert!(message.contains("contrastgeo index build"), "{message}");
    }

    #[test]
    fn corrupt_vector_values_are_reported_not_panicked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .vectors
            .insert(5u64.to_be_bytes(), &[9u8, 0, 0][..])
            .expect("raw insert");
        let err = store.vector(5).expect_err("corrupt");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(store.vectors_after(0).any(|r| r.is_err()));
    }
}
