//! The benchmark's per-city support/test split and the seeded K-shot sampler.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use super::{CityPost, DataError};
use crate::geo::CityId;

/// Post ids per city: `support` may be used for training and as few-shot examples, `test` only to evaluate.
#[derive(Debug, Clone, Deserialize)]
pub struct CitySplit {
    /// Ids usable for training.
    pub support: Vec<String>,
    /// Ids for evaluation only.
    pub test: Vec<String>,
}

/// The split of a benchmark: `split.json` maps city ids (as text) to their [`CitySplit`].
#[derive(Debug, Clone)]
pub struct Split {
    /// Per city, ordered by id for determinism.
    pub cities: BTreeMap<CityId, CitySplit>,
}

impl Split {
    /// Reads `split.json`.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: HashMap<String, CitySplit> =
            serde_json::from_slice(&bytes).map_err(|e| DataError::BadFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let mut cities = BTreeMap::new();
        for (id, split) in raw {
            let id: CityId = id.parse().map_err(|_| DataError::BadFile {
                path: path.to_path_buf(),
                reason: format!("city key {id:?} is not a numeric id"),
            })?;
            cities.insert(id, split);
        }
        Ok(Self { cities })
    }
}

impl Split {
    /// A split where every bound post with an id is support (for training without a benchmark split).
    pub fn all_support(posts: &[CityPost], cities: &crate::geo::CityTable) -> Self {
        let mut split: BTreeMap<CityId, CitySplit> = BTreeMap::new();
        for post in posts {
            if let Some(id) = &post.post.id {
                split
                    .entry(cities.cities()[post.city].id)
                    .or_insert_with(|| CitySplit {
                        support: Vec::new(),
                        test: Vec::new(),
                    })
                    .support
                    .push(id.clone());
            }
        }
        Self { cities: split }
    }
}

/// Gives each post without an `id` one from its position ("(post 3)", 1-based), so that a set of posts
/// without ids can still be drawn from by [`Split::all_support`] and [`sample_k_shot`].
pub fn name_unnamed_posts(posts: &mut [CityPost]) {
    for (i, post) in posts.iter_mut().enumerate() {
        post.post
            .id
            .get_or_insert_with(|| format!("(post {})", i + 1));
    }
}

/// Draws `shots` support posts per city with a fixed seed (fewer when a city has fewer). `posts` are the
/// bound posts of the benchmark; `by_id` maps post ids to positions in `posts`. The draw for a city depends
/// only on (seed, city, its support list), so adding cities does not change other cities' draws.
pub fn sample_k_shot(split: &Split, posts: &[CityPost], shots: usize, seed: u64) -> Vec<CityPost> {
    let by_id: HashMap<&str, usize> = posts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.post.id.as_deref().map(|id| (id, i)))
        .collect();
    let mut drawn = Vec::new();
    for (city, city_split) in &split.cities {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ city.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut ids: Vec<&String> = city_split.support.iter().collect();
        ids.shuffle(&mut rng);
        drawn.extend(
            ids.into_iter()
                .filter_map(|id| by_id.get(id.as_str()))
                .take(shots)
                .map(|&i| posts[i].clone()),
        );
    }
    drawn
}

/// The test posts of the split, in split order.
pub fn test_posts(split: &Split, posts: &[CityPost]) -> Vec<CityPost> {
    let by_id: HashMap<&str, usize> = posts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.post.id.as_deref().map(|id| (id, i)))
        .collect();
    split
        .cities
        .values()
        .flat_map(|s| s.test.iter())
        .filter_map(|id| by_id.get(id.as_str()).map(|&i| posts[i].clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::LabelledPost;

    fn posts(n: usize, city: usize) -> Vec<CityPost> {
        (0..n)
            .map(|i| CityPost {
                post: LabelledPost {
                    id: Some(format!("{city}-{i}")),
                    text: format!("post {i}"),
                    city_id: Some(city as u64),
                    lat: None,
                    lon: None,
                    user: None,
                    time: None,
                    user_location: None,
                },
                city,
            })
            .collect()
    }

    #[test]
    fn k_shot_is_seeded_per_city_and_only_uses_support_ids() {
        let mut all = posts(10, 0);
        all.extend(posts(3, 1));
        let mut cities = BTreeMap::new();
        cities.insert(
            0,
            CitySplit {
                support: (0..6).map(|i| format!("0-{i}")).collect(),
                test: vec!["0-9".into()],
            },
        );
        cities.insert(
            1,
            CitySplit {
                support: (0..3).map(|i| format!("1-{i}")).collect(),
                test: vec![],
            },
        );
        let split = Split { cities };
        let a = sample_k_shot(&split, &all, 4, 7);
        let b = sample_k_shot(&split, &all, 4, 7);
        let ids = |v: &[CityPost]| {
            v.iter()
                .map(|p| p.post.id.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
        assert_eq!(a.iter().filter(|p| p.city == 0).count(), 4);
        assert_eq!(
            a.iter().filter(|p| p.city == 1).count(),
            3,
            "a city with fewer posts gives all it has"
        );
        assert!(ids(&a)
            .iter()
            .all(|id| id != "0-9" && !id.starts_with("0-6")));
        let c = sample_k_shot(&split, &all, 4, 8);
        assert_ne!(ids(&a), ids(&c), "another seed draws other posts");
        assert_eq!(ids(&test_posts(&split, &all)), vec!["0-9".to_string()]);
    }
}
