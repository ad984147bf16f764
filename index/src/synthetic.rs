//! Deterministic synthetic embeddings for tests, examples and benchmarks (no `rand` dependency).
//!
//! Real embeddings of posts about one city cluster together, so the generator samples points
//! around cluster centres on the unit sphere rather than uniformly: HNSW behaves on such data as
//! it does on real embeddings, while uniform high-dimensional data is its worst case.

use crate::records::{VectorKind, VectorMeta};

/// A small deterministic random number generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// Uniform in `0..n`; `n` must not be 0.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// Cluster centres on the unit sphere; samples are a centre plus Gaussian noise, re-normalised.
#[derive(Debug, Clone)]
pub struct Clusters {
    centres: Vec<Vec<f32>>,
}

impl Clusters {
    /// `count` (at least 1) centres of dimension `dimension`, drawn from `seed`.
    pub fn new(seed: u64, dimension: usize, count: usize) -> Clusters {
        let mut rng = Rng::new(seed);
        let centres = (0..count.max(1))
            .map(|_| unit((0..dimension).map(|_| rng.gaussian()).collect()))
            .collect();
        Clusters { centres }
    }

    /// `n` unit vectors around random centres; `noise` is the per-component standard deviation
    /// (0.1 in 384 dimensions puts samples at cosine ~0.46 from their centre).
    pub fn sample(&self, rng: &mut Rng, n: usize, noise: f32) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                let centre = &self.centres[rng.below(self.centres.len())];
                unit(centre.iter().map(|c| c + noise * rng.gaussian()).collect())
            })
            .collect()
    }

    /// [`Clusters::sample`] as support vectors ready for `VectorIndex::insert`: the `n` vectors numbered
    /// from `first` belong to cities of `per_city` (at least 1) consecutive vectors, city `number / per_city`.
    pub fn support_rows(
        &self,
        rng: &mut Rng,
        first: usize,
        n: usize,
        noise: f32,
        per_city: usize,
    ) -> Vec<(VectorMeta, Vec<f32>)> {
        self.sample(rng, n, noise)
            .into_iter()
            .enumerate()
            .map(|(i, vector)| {
                let meta = VectorMeta {
                    city: ((first + i) / per_city.max(1)) as u64,
                    kind: VectorKind::Support,
                    post: None,
                };
                (meta, vector)
            })
            .collect()
    }
}
