//! The inference forward pass of the BERT encoder on the CPU, written on plain `f32` slices.
//!
//! Why a second implementation of the same function? On a small CPU the candle op-by-op path loses most of
//! its time outside arithmetic: every op allocates a tensor, elementwise ops hand work to candle's spinning
//! barrier pool while rayon (buckets) and gemm (its own rayon split) compete for the same cores, and padded
//! batches pay for attention and dense layers over padding. This pass:
//! - packs the tokens of a batch without padding (`[tokens, hidden]`): dense layers see only real tokens,
//!   and attention runs per post over its own length, so no attention mask is needed;
//! - calls `gemm` directly on the live weight storage (no copy: an optimiser step shows at once), with bias
//!   and residual fused into the product (the destination is pre-filled and accumulated into);
//! - runs one batch per core with single-threaded kernels (no synchronisation between ops), or one batch
//!   split over the cores when there is only one batch, each core computing its own block of output columns;
//! - evaluates GELU with an erf approximation (absolute error under 6e-7 in f32) and softmax with an exp
//!   approximation (relative error about 1e-7), both branch-free loops the compiler vectorises.
//!
//! It is inference only: the training forward ([`super::ForwardMode::Train`]) stays on candle ops with
//! autograd. `tests/encoder.rs` checks this pass against the candle path and candle-transformers' BERT.

use candle_core::{Layout, Storage, StorageRef, Tensor};
use gemm::Parallelism;

use super::bert::{BertEncoder, TrainableLayerNorm};
use super::config::HiddenAct;
use super::error::{ModelError, Result};
use super::pooling::Pooling;

/// Read guards on every weight tensor of an encoder, held for one forward pass.
struct HeldWeights<'t> {
    guards: Vec<(StorageRef<'t>, &'t Layout)>,
}

impl<'t> HeldWeights<'t> {
    fn new(tensors: &[&'t Tensor]) -> Self {
        Self {
            guards: tensors.iter().map(|t| t.storage_and_layout()).collect(),
        }
    }

    /// The `index`-th tensor as a contiguous f32 slice.
    fn slice(&self, index: usize) -> Result<&[f32]> {
        let (storage, layout) = &self.guards[index];
        let Storage::Cpu(cpu) = &**storage else {
            return Err(ModelError::InvalidSetting(
                "the CPU forward pass needs weights on the CPU".into(),
            ));
        };
        let data = cpu.as_slice::<f32>()?;
        match layout.contiguous_offsets() {
            Some((start, end)) => Ok(&data[start..end]),
            None => Err(ModelError::InvalidSetting(
                "the CPU forward pass needs contiguous weights".into(),
            )),
        }
    }
}

/// A dense layer's `[out, in]` weight and `[out]` bias.
#[derive(Clone, Copy)]
struct DenseSlices<'w> {
    weight: &'w [f32],
    bias: &'w [f32],
    /// The weight transposed to `[in, out]`, when the caller made one: gemm then reads it without packing.
    transposed: Option<&'w [f32]>,
}

/// A LayerNorm's scale, shift and epsilon.
#[derive(Clone, Copy)]
struct NormSlices<'w> {
    weight: &'w [f32],
    bias: &'w [f32],
    eps: f32,
}

struct LayerSlices<'w> {
    query: DenseSlices<'w>,
    key: DenseSlices<'w>,
    value: DenseSlices<'w>,
    attention_output: DenseSlices<'w>,
    attention_norm: NormSlices<'w>,
    intermediate: DenseSlices<'w>,
    output: DenseSlices<'w>,
    output_norm: NormSlices<'w>,
}

/// Every weight of the encoder as slices, plus the shapes the pass needs.
struct Weights<'w> {
    word: &'w [f32],
    position: &'w [f32],
    token_type: &'w [f32],
    embedding_norm: NormSlices<'w>,
    layers: Vec<LayerSlices<'w>>,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    head_size: usize,
    activation: HiddenAct,
}

/// The weight tensors of `bert`, in the order [`Weights::from_held`] reads them.
fn weight_tensors(bert: &BertEncoder) -> Vec<&Tensor> {
    let mut tensors = vec![
        bert.embeddings.word.embeddings(),
        bert.embeddings.position.embeddings(),
        bert.embeddings.token_type.embeddings(),
        &bert.embeddings.layer_norm.weight,
        &bert.embeddings.layer_norm.bias,
    ];
    for layer in &bert.layers {
        for dense in [
            &layer.attention.query,
            &layer.attention.key,
            &layer.attention.value,
            &layer.attention.output,
        ] {
            tensors.extend([&dense.weight, &dense.bias]);
        }
        tensors.extend([
            &layer.attention.output_norm.weight,
            &layer.attention.output_norm.bias,
        ]);
        for dense in [&layer.intermediate, &layer.output] {
            tensors.extend([&dense.weight, &dense.bias]);
        }
        tensors.extend([&layer.output_norm.weight, &layer.output_norm.bias]);
    }
    tensors
}

impl<'w> Weights<'w> {
    fn from_held(
        bert: &BertEncoder,
        held: &'w HeldWeights<'_>,
        transposed: Option<&'w [Vec<f32>]>,
    ) -> Result<Self> {
        let config = bert.config();
        let mut transposed = transposed.map(|t| t.iter());
        let mut next_transposed = move || {
            transposed
                .as_mut()
                .and_then(|t| t.next().map(Vec::as_slice))
        };
        let mut cursor = 0usize..held.guards.len();
        let mut take = || -> Result<&'w [f32]> {
            let index = cursor.next().ok_or_else(|| {
                ModelError::InvalidSetting("fewer weight tensors than the encoder has".into())
            })?;
            held.slice(index)
        };
        let word = take()?;
        let position = take()?;
        let token_type = take()?;
        let mut norm = |source: &TrainableLayerNorm| -> Result<NormSlices<'w>> {
            Ok(NormSlices {
                weight: take()?,
                bias: take()?,
                eps: source.eps as f32,
            })
        };
        let embedding_norm = norm(&bert.embeddings.layer_norm)?;
        let mut layers = Vec::with_capacity(bert.layers.len());
        for layer in &bert.layers {
            let mut dense = || -> Result<DenseSlices<'w>> {
                Ok(DenseSlices {
                    weight: take()?,
                    bias: take()?,
                    transposed: next_transposed(),
                })
            };
            let query = dense()?;
            let key = dense()?;
            let value = dense()?;
            let attention_output = dense()?;
            let attention_norm = NormSlices {
                weight: take()?,
                bias: take()?,
                eps: layer.attention.output_norm.eps as f32,
            };
            let intermediate = DenseSlices {
                weight: take()?,
                bias: take()?,
                transposed: next_transposed(),
            };
            let output = DenseSlices {
                weight: take()?,
                bias: take()?,
                transposed: next_transposed(),
            };
            let output_norm = NormSlices {
                weight: take()?,
                bias: take()?,
                eps: layer.output_norm.eps as f32,
            };
            layers.push(LayerSlices {
                query,
                key,
                value,
                attention_output,
                attention_norm,
                intermediate,
                output,
                output_norm,
            });
        }
        let weights = Self {
            word,
            position,
            token_type,
            embedding_norm,
            layers,
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            heads: config.num_attention_heads,
            head_size: config.head_size(),
            activation: config.hidden_act,
        };
        weights.check_shapes()?;
        Ok(weights)
    }

    fn check_shapes(&self) -> Result<()> {
        let (h, i) = (self.hidden, self.intermediate);
        let dense_ok = |d: &DenseSlices, inp: usize, out: usize| {
            d.weight.len() == inp * out
                && d.bias.len() == out
                && d.transposed.is_none_or(|t| t.len() == inp * out)
        };
        let norm_ok = |n: &NormSlices| n.weight.len() == h && n.bias.len() == h;
        let layers_ok = self.layers.iter().all(|l| {
            dense_ok(&l.query, h, h)
                && dense_ok(&l.key, h, h)
                && dense_ok(&l.value, h, h)
                && dense_ok(&l.attention_output, h, h)
                && dense_ok(&l.intermediate, h, i)
                && dense_ok(&l.output, i, h)
                && norm_ok(&l.attention_norm)
                && norm_ok(&l.output_norm)
        });
        if layers_ok && norm_ok(&self.embedding_norm) && self.heads * self.head_size == h {
            Ok(())
        } else {
            Err(ModelError::InvalidSetting(
                "weight shapes do not match the encoder's config".into(),
            ))
        }
    }
}

/// The encoder's weights read in place for a series of forward passes (read locks held until dropped), with
/// optional transposed copies of the dense weights.
///
/// Why the copies: `gemm` repacks a `[out, in]` weight read as `W^T` on every product, which costs about as
/// much as the product itself when a pass holds few tokens (a batch of one post runs about 2.8x faster
/// with the copies). Making them reads all 10.6M dense weights once, so [`super::TextEncoder::embed`] asks
/// for them only for calls with enough tokens to repay that; they are made per call, never cached, so they
/// always match the live weights.
pub(crate) struct CpuWeights<'t> {
    bert: &'t BertEncoder,
    held: HeldWeights<'t>,
    transposed: Option<Vec<Vec<f32>>>,
}

impl<'t> CpuWeights<'t> {
    /// Takes read access to `bert`'s weights; `transpose` also makes the `[in, out]` copies.
    pub(crate) fn new(bert: &'t BertEncoder, transpose: bool) -> Result<Self> {
        let held = HeldWeights::new(&weight_tensors(bert));
        let transposed = if transpose {
            let weights = Weights::from_held(bert, &held, None)?;
            let mut copies = Vec::with_capacity(weights.layers.len() * 6);
            for layer in &weights.layers {
                for dense in [
                    layer.query,
                    layer.key,
                    layer.value,
                    layer.attention_output,
                    layer.intermediate,
                    layer.output,
                ] {
                    copies.push(transpose_dense(dense));
                }
            }
            Some(copies)
        } else {
            None
        };
        Ok(Self {
            bert,
            held,
            transposed,
        })
    }

    /// Pooled, unit-length embeddings of token sequences (each non-empty, special tokens included),
    /// computed without padding. `threads` > 1 splits each matrix product over the rayon pool; use 1 when
    /// the caller already runs one batch per core.
    pub(crate) fn embed(
        &self,
        sequences: &[&[u32]],
        pooling: Pooling,
        threads: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let weights = Weights::from_held(self.bert, &self.held, self.transposed.as_deref())?;
        let pass = Pass::new(&weights, sequences, threads.max(1))?;
        Ok(pass.run(pooling))
    }
}

/// `[out, in]` -> `[in, out]`, row-major.
fn transpose_dense(dense: DenseSlices) -> Vec<f32> {
    let out_dim = dense.bias.len();
    let in_dim = dense.weight.len() / out_dim;
    let mut transposed = vec![0f32; dense.weight.len()];
    // Blocks of 16 rows keep both sides in cache.
    for block in (0..out_dim).step_by(16) {
        for i in 0..in_dim {
            for o in block..(block + 16).min(out_dim) {
                transposed[i * out_dim + o] = dense.weight[o * in_dim + i];
            }
        }
    }
    transposed
}

/// Output columns per thread are a multiple of this (whole AVX-512 registers of f32 in the kernels).
const COLUMN_ALIGN: usize = 16;

/// `out[:, cols] += input x rhs[:, cols]` for a block of output columns: the pointers and strides of one
/// dense layer's product, shared by the threads that compute its column blocks.
struct OutputColumns {
    out: *mut f32,
    input: *const f32,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
    tokens: usize,
    in_dim: usize,
    out_dim: usize,
}

// SAFETY: the pointers address buffers that outlive the scope the threads run in, and each thread writes
// only its own block of output columns (see `OutputColumns::compute`).
unsafe impl Sync for OutputColumns {}

impl OutputColumns {
    /// Accumulates columns `start..end` of the product into `out` (pre-filled with bias and residual).
    ///
    /// # Safety
    /// `out` is [tokens, out_dim], `input` [tokens, in_dim] and `rhs` addresses an [in_dim, out_dim] matrix
    /// with the given strides, all valid for the call; no other thread writes columns `start..end` meanwhile.
    unsafe fn compute(&self, start: usize, end: usize) {
        gemm::gemm(
            self.tokens,
            end - start,
            self.in_dim,
            self.out.add(start),
            1,
            self.out_dim as isize,
            true,
            self.input,
            1,
            self.in_dim as isize,
            self.rhs.offset(start as isize * self.rhs_cs),
            self.rhs_cs,
            self.rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// One forward pass over a packed batch.
struct Pass<'w, 's> {
    weights: &'w Weights<'w>,
    sequences: &'s [&'s [u32]],
    /// Row where each sequence starts in the packed `[tokens, hidden]` matrix.
    starts: Vec<usize>,
    tokens: usize,
    /// Cores one matrix product is split over (by output columns).
    threads: usize,
}

impl<'w, 's> Pass<'w, 's> {
    fn new(weights: &'w Weights<'w>, sequences: &'s [&'s [u32]], threads: usize) -> Result<Self> {
        let mut starts = Vec::with_capacity(sequences.len());
        let mut tokens = 0usize;
        let vocab = weights.word.len() / weights.hidden;
        let positions = weights.position.len() / weights.hidden;
        for sequence in sequences {
            if sequence.is_empty() || sequence.len() > positions {
                return Err(ModelError::InvalidSetting(format!(
                    "a sequence of {} tokens (the model takes 1 to {positions})",
                    sequence.len()
                )));
            }
            if let Some(&id) = sequence.iter().find(|&&id| id as usize >= vocab) {
                return Err(ModelError::InvalidSetting(format!(
                    "token id {id} outside the vocabulary of {vocab}"
                )));
            }
            starts.push(tokens);
            tokens += sequence.len();
        }
        Ok(Self {
            weights,
            sequences,
            starts,
            tokens,
            threads,
        })
    }

    /// Runs the pass with the widest vector instructions this CPU has: the elementwise loops (GELU,
    /// softmax, LayerNorm) are inlined into [`with_best_simd`] and compiled once per instruction set.
    fn run(&self, pooling: Pooling) -> Vec<Vec<f32>> {
        with_best_simd(
            #[inline(always)]
            || self.run_inlined(pooling),
        )
    }

    #[inline(always)]
    fn run_inlined(&self, pooling: Pooling) -> Vec<Vec<f32>> {
        let w = self.weights;
        let h = w.hidden;
        let mut hidden = self.embed_tokens();
        let mut query = vec![0f32; self.tokens * h];
        let mut key = vec![0f32; self.tokens * h];
        let mut value = vec![0f32; self.tokens * h];
        let mut context = vec![0f32; self.tokens * h];
        let mut attended = vec![0f32; self.tokens * h];
        let mut expanded = vec![0f32; self.tokens * w.intermediate];
        let longest = self.sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut scores = vec![0f32; longest * longest];
        for layer in &w.layers {
            self.dense(&hidden, h, layer.query, None, &mut query);
            self.dense(&hidden, h, layer.key, None, &mut key);
            self.dense(&hidden, h, layer.value, None, &mut value);
            self.attention(&query, &key, &value, &mut scores, &mut context);
            self.dense(
                &context,
                h,
                layer.attention_output,
                Some(&hidden),
                &mut attended,
            );
            layer_norm_rows(&mut attended, layer.attention_norm);
            self.dense(&attended, h, layer.intermediate, None, &mut expanded);
            activate(&mut expanded, w.activation);
            self.dense(
                &expanded,
                w.intermediate,
                layer.output,
                Some(&attended),
                &mut hidden,
            );
            layer_norm_rows(&mut hidden, layer.output_norm);
        }
        self.pool(&hidden, pooling)
    }

    /// word + position + token type 0, then LayerNorm: `[tokens, hidden]`.
    #[inline(always)]
    fn embed_tokens(&self) -> Vec<f32> {
        let w = self.weights;
        let h = w.hidden;
        let mut hidden = vec![0f32; self.tokens * h];
        let type_row = &w.token_type[..h];
        for (sequence, &start) in self.sequences.iter().zip(&self.starts) {
            for (position, &id) in sequence.iter().enumerate() {
                let row = &mut hidden[(start + position) * h..][..h];
                let word = &w.word[id as usize * h..][..h];
                let pos = &w.position[position * h..][..h];
                for (((out, a), b), c) in row.iter_mut().zip(word).zip(pos).zip(type_row) {
                    *out = a + b + c;
                }
            }
        }
        layer_norm_rows(&mut hidden, w.embedding_norm);
        hidden
    }

    /// `out = input x W^T + b (+ residual)` over all packed rows; `input` is `[tokens, in_dim]`.
    #[inline(always)]
    fn dense(
        &self,
        input: &[f32],
        in_dim: usize,
        layer: DenseSlices,
        residual: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let out_dim = layer.bias.len();
        for (row, out_row) in out.chunks_exact_mut(out_dim).enumerate() {
            match residual {
                Some(residual) => {
                    let res = &residual[row * out_dim..][..out_dim];
                    for ((o, b), r) in out_row.iter_mut().zip(layer.bias).zip(res) {
                        *o = b + r;
                    }
                }
                None => out_row.copy_from_slice(layer.bias),
            }
        }
        // rhs = W^T, [in, out]: element (k, n) is W[n, k], or transposed[k, n] when there is a copy.
        let (rhs, rhs_cs, rhs_rs) = match layer.transposed {
            Some(t) => (t.as_ptr(), 1, out_dim as isize),
            None => (layer.weight.as_ptr(), in_dim as isize, 1),
        };
        let product = OutputColumns {
            out: out.as_mut_ptr(),
            input: input.as_ptr(),
            rhs,
            rhs_cs,
            rhs_rs,
            tokens: self.tokens,
            in_dim,
            out_dim,
        };
        if self.threads <= 1 {
            // SAFETY: the whole of `out` by one thread.
            unsafe { product.compute(0, out_dim) };
            return;
        }
        // One batch over several cores: each core computes its own block of output columns with a
        // single-threaded kernel, reading only its share of the weights. (gemm's own split of a product
        // with a few dozen rows cost more than it gained: one post took 19 ms on two threads, 15.5 on one.)
        let block = out_dim
            .div_ceil(self.threads)
            .next_multiple_of(COLUMN_ALIGN);
        rayon::scope(|scope| {
            for start in (0..out_dim).step_by(block) {
                let end = (start + block).min(out_dim);
                let product = &product;
                // SAFETY: the column blocks are disjoint, so no two threads write the same element.
                scope.spawn(move |_| unsafe { product.compute(start, end) });
            }
        });
    }

    /// Scaled dot-product attention of every post over its own tokens, head by head, into `context`.
    #[inline(always)]
    fn attention(
        &self,
        query: &[f32],
        key: &[f32],
        value: &[f32],
        scores: &mut [f32],
        context: &mut [f32],
    ) {
        let w = self.weights;
        let (h, d) = (w.hidden, w.head_size);
        let scale = 1.0 / (d as f32).sqrt();
        for (sequence, &start) in self.sequences.iter().zip(&self.starts) {
            let len = sequence.len();
            let scores = &mut scores[..len * len];
            for head in 0..w.heads {
                let offset = start * h + head * d;
                // SAFETY: rows start..start+len and columns head*d..(head+1)*d of [tokens, h] matrices;
                // `scores` holds len x len.
                unsafe {
                    // scores = scale * Q_h K_h^T
                    gemm::gemm(
                        len,
                        len,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        len as isize,
                        false,
                        query.as_ptr().add(offset),
                        1,
                        h as isize,
                        key.as_ptr().add(offset),
                        h as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                for row in scores.chunks_exact_mut(len) {
                    softmax_in_place(row);
                }
                // SAFETY: as above; the context block has the same rows and columns as the query block.
                unsafe {
                    gemm::gemm(
                        len,
                        d,
                        len,
                        context.as_mut_ptr().add(offset),
                        1,
                        h as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        len as isize,
                        value.as_ptr().add(offset),
                        1,
                        h as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            }
        }
    }

    /// One unit-length vector per sequence.
    #[inline(always)]
    fn pool(&self, hidden: &[f32], pooling: Pooling) -> Vec<Vec<f32>> {
        let h = self.weights.hidden;
        self.sequences
            .iter()
            .zip(&self.starts)
            .map(|(sequence, &start)| {
                let rows = &hidden[start * h..(start + sequence.len()) * h];
                let mut pooled = match pooling {
                    Pooling::Cls => rows[..h].to_vec(),
                    Pooling::Mean => {
                        let mut sum = vec![0f32; h];
                        for row in rows.chunks_exact(h) {
                            for (s, x) in sum.iter_mut().zip(row) {
                                *s += x;
                            }
                        }
                        let count = sequence.len() as f32;
                        sum.iter_mut().for_each(|s| *s /= count);
                        sum
                    }
                };
                let norm = pooled.iter().map(|x| x * x).sum::<f32>().sqrt() + 1e-12;
                pooled.iter_mut().for_each(|x| *x /= norm);
                pooled
            })
            .collect()
    }
}

/// Calls `f` inside a function compiled for AVX-512 or AVX2+FMA when the CPU has them (checked at run
/// time, so one binary runs everywhere); `f` and what it inlines are then vectorised for that set.
#[inline(always)]
fn with_best_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the callee is compiled for.
            return unsafe { run_avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { run_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// LayerNorm of every `weight.len()`-wide row of `rows`, in place.
#[inline(always)]
fn layer_norm_rows(rows: &mut [f32], norm: NormSlices) {
    let width = norm.weight.len();
    for row in rows.chunks_exact_mut(width) {
        let mean = sum_lanes(row, |x| x) / width as f32;
        let variance = sum_lanes(row, |x| (x - mean) * (x - mean)) / width as f32;
        let inv = 1.0 / (variance + norm.eps).sqrt();
        for ((x, g), b) in row.iter_mut().zip(norm.weight).zip(norm.bias) {
            *x = (*x - mean) * inv * g + b;
        }
    }
}

/// `sum f(x)` with 16 independent partial sums, so the loop vectorises (a single running float sum must
/// keep its order and stays scalar).
#[inline(always)]
fn sum_lanes(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let mut partial = [0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (p, &x) in partial.iter_mut().zip(chunk) {
            *p += f(x);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    partial.iter().sum::<f32>() + tail
}

/// The activation of the feed-forward block, in place.
#[inline(always)]
fn activate(values: &mut [f32], activation: HiddenAct) {
    match activation {
        HiddenAct::Gelu => values.iter_mut().for_each(|x| *x = gelu_erf(*x)),
        HiddenAct::GeluApproximate => values.iter_mut().for_each(|x| *x = gelu_tanh(*x)),
        HiddenAct::Relu => values.iter_mut().for_each(|x| *x = x.max(0.0)),
    }
}

/// Softmax of one row, in place.
#[inline(always)]
fn softmax_in_place(row: &mut [f32]) {
    let max = row
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    row.iter_mut().for_each(|x| *x = exp_approx(*x - max));
    let inv = 1.0 / sum_lanes(row, |x| x);
    row.iter_mut().for_each(|x| *x *= inv);
}

/// `e^x` for x in about [-87, 88]: range reduction to `2^n e^r` with |r| <= ln2/2 and a degree-6
/// polynomial for `e^r` (relative error about 1e-7). Branch-free so loops over it vectorise.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HIGH is exact for the n that occur.
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HIGH) - n * LN2_LOW;
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // `shifted`'s low mantissa bits hold n (offset by 2^22, which the shift drops): 2^n without a
    // float-to-int conversion.
    let scale = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    p * scale
}

/// `erf(x)` by Abramowitz and Stegun 7.1.26 (absolute error at most 1.5e-7, plus the exp approximation's).
#[inline(always)]
pub(crate) fn erf_approx(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_8;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let a = x.abs();
    let a = if a > 10.0 { 10.0 } else { a };
    let t = 1.0 / (1.0 + P * a);
    let poly = ((((A5 * t + A4) * t + A3) * t + A2) * t + A1) * t;
    let y = 1.0 - poly * exp_approx(-a * a);
    y.copysign(x)
}

/// Exact-form GELU, `x/2 (1 + erf(x / sqrt 2))`.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The tanh approximation of GELU, for checkpoints trained with it.
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    let inner = C * (x + 0.044_715 * x * x * x);
    // tanh(z) = 1 - 2 / (e^{2z} + 1)
    let tanh = 1.0 - 2.0 / (exp_approx(2.0 * inner) + 1.0);
    0.5 * x * (1.0 + tanh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approximation_is_accurate_over_the_range_used() {
        let mut worst = 0f64;
        for i in 0..=20_000 {
            let x = -87.0 + (i as f32) * (87.0 + 10.0) / 20_000.0;
            let exact = (x as f64).exp();
            let rel = ((exp_approx(x) as f64 - exact) / exact).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }

    #[test]
    fn erf_approximation_is_within_6e_7() {
        let mut worst = 0f64;
        for i in 0..=40_000 {
            let x = -8.0 + (i as f64) * 16.0 / 40_000.0;
            let exact = libm_erf(x);
            worst = worst.max((erf_approx(x as f32) as f64 - exact).abs());
        }
        assert!(worst < 6e-7, "worst absolute error {worst}");
    }

    /// A high-precision reference erf (series for small x, continued fraction for large x).
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let value = if a < 3.0 {
            // Maclaurin series: erf x = 2/sqrt(pi) sum (-1)^n x^(2n+1) / (n! (2n+1))
            let mut term = a;
            let mut sum = a;
            for n in 1..200 {
                term *= -a * a / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // Continued fraction for erfc, evaluated bottom-up.
            let mut fraction = 0.0;
            for k in (1..200).rev() {
                fraction = (k as f64 / 2.0) / (a + fraction);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + fraction)
        };
        value.copysign(x)
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut row = vec![1.0, 2.0, -3.0, 0.5];
        softmax_in_place(&mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[1] > row[0] && row[0] > row[3] && row[3] > row[2]);
    }
}
