//! The records the store keeps: gazetteer cities, the support posts written about them, and the
//! metadata attached to every stored vector.
//!
//! These are plain serde types so that the CLI, the server and the JSON Schemas can share them; the
//! store encodes cities and support posts with bincode and vectors with a fixed binary layout (see
//! [`crate::store`]).

use serde::{Deserialize, Serialize};

/// A GeoNames city id.
pub type CityId = u64;

/// Id of a stored support post, handed out by the store from a monotonic counter (first id is 1).
pub type PostId = u64;

/// Id of a stored vector, handed out by the store from a monotonic counter (first id is 1).
///
/// Ids are never reused, even after a crash, so "every vector with id <= w" is a stable set: that is
/// what a graph dump's watermark means.
pub type VectorId = u64;

/// A city of the gazetteer, one candidate answer of a geolocation query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct City {
    /// GeoNames id.
    pub id: CityId,
    /// Name in the gazetteer's main language.
    pub name: String,
    /// First-level administrative division (state, region), when the gazetteer has one.
    pub admin1: Option<String>,
    /// Country name.
    pub country: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country_code: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Population, 0 when unknown.
    pub population: u64,
    /// Alternate names and spellings.
    pub alternate_names: Vec<String>,
}

/// A social post known to have been written in a city: the few-shot support evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupportPost {
    /// The post's text.
    pub text: String,
    /// The city it was written in.
    pub city: CityId,
    /// Where it came from: free text such as `ingest` or a file name.
    pub source: String,
}

/// What a stored vector embeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VectorKind {
    /// The embedding of a city's location prompt.
    Prompt,
    /// The embedding of one support post.
    Support,
}

/// What a stored vector belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VectorMeta {
    /// The city the vector stands for.
    pub city: CityId,
    /// Whether it embeds the city's prompt or a support post.
    pub kind: VectorKind,
    /// The support post embedded, for [`VectorKind::Support`] vectors.
    pub post: Option<PostId>,
}

/// A stored vector with its id and metadata, as read back from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorRecord {
    /// The vector's id.
    pub id: VectorId,
    /// What it belongs to.
    pub meta: VectorMeta,
    /// The vector itself.
    pub vector: Vec<f32>,
}
