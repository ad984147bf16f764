//! contrastgeo: a vector-search geolocation database.
//!
//! Data flows one way: text -> tokens -> embedding -> candidates -> rerank -> answer. Each step has one
//! owner: [`model`] turns text into embeddings.

pub mod atomic_dir;
pub mod cli;
pub mod data;
pub mod engine;
pub mod eval;
pub mod geo;
pub mod home;
pub mod input;
pub mod lines;
pub mod model;
pub mod replication;
pub mod server;
pub mod train;
