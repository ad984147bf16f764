//! contrastgeo: a vector-search geolocation database.
//!
//! Data flows one way: text -> tokens -> embedding -> candidates -> rerank -> answer. Each step has one
//! owner: [`model`] turns text into embeddings.

pub mod cli;
pub mod model;
