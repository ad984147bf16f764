//! Few-shot training of a [`GeoModel`](crate::model::GeoModel): the TLC and TLM objectives with online hard
//! negatives, AdamW with warm-up and linear decay, and the step loop.

pub mod objectives;
pub mod trainer;

pub use objectives::{sample_hard_negatives, tlc_loss, tlc_loss_scaled, NegativeSampling};
pub use trainer::{train, StepReport, TrainConfig, TrainError, TrainReport};
