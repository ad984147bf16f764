//! Token hidden states -> one unit-length vector per text.

use candle_core::{DType, IndexOp, Tensor};
use serde::{Deserialize, Serialize};

/// How token states are pooled into a text embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean over real (unmasked) tokens: what all-MiniLM-L6-v2 was trained with.
    #[default]
    Mean,
    /// The `[CLS]` token's state.
    Cls,
}

impl Pooling {
    /// Pools `[B, T, H]` hidden states under a `[B, T]` 0/1 mask into `[B, H]`.
    pub fn pool(self, hidden: &Tensor, attention_mask: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Pooling::Cls => hidden.i((.., 0))?.contiguous(),
            Pooling::Mean => {
                let mask = attention_mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?;
                summed.broadcast_div(&counts)
            }
        }
    }
}

/// Scales each row of `[B, H]` to unit L2 norm (rows of zeros stay finite thanks to a tiny epsilon).
pub fn l2_normalize(rows: &Tensor) -> candle_core::Result<Tensor> {
    let norms = (rows.sqr()?.sum_keepdim(1)?.sqrt()? + 1e-12)?;
    rows.broadcast_div(&norms)
}

/// Cosine similarities `[A, B]` between unit rows of `a` `[A, H]` and `b` `[B, H]`.
pub fn cosine_matrix(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    a.matmul(&b.t()?)
}

/// Converts a `[B, H]` tensor to rows of f32.
pub fn to_rows(tensor: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    tensor.to_dtype(DType::F32)?.to_vec2::<f32>()
}
