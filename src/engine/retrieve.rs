//! Retrieval and per-city aggregation: a post's nearest stored vectors propose candidate cities, and each
//! candidate is scored exactly against all of its own vectors.
//!
//! A city's retrieval score is `w * p + (1 - w) * s`, where `p` is the cosine similarity of the post to the
//! city's location prompt, `s` the highest cosine similarity to one of the city's support posts, and `w` the
//! engine's `prompt_weight`. A city with no support posts (the zero-shot case, e.g. most of the gazetteer)
//! is scored by `p` alone, and a city with supports but no prompt by `s` alone. Scores of cities with and
//! without supports are therefore on the same cosine scale, but not equally informed: a city with supports
//! gains when its posts resemble the query and loses when they do not.
//!
//! Ranking adds what the post says besides its vector ([`PostEvidence`]: its profile location and the places
//! it names) and the population prior ([`PopulationPrior`]) to the retrieval score: [`CityScore::ranking`].

use std::collections::HashMap;

use contrastgeo_index::{dot, LexicalHit, Neighbour, PostId, VectorIndex, VectorKind};

use super::error::Result;
use super::label_head::{HeadScores, LabelHead};
use super::snapshot::{CityCache, CityEntry};
use crate::geo::CityId;

/// A candidate city's retrieval scores.
#[derive(Debug, Clone, PartialEq)]
pub struct CityScore {
    /// The city.
    pub city: CityId,
    /// Cosine similarity to the city's prompt, when it has one.
    pub prompt_similarity: Option<f32>,
    /// Highest cosine similarity to one of the city's support posts, when it has any.
    pub support_similarity: Option<f32>,
    /// The combined score (see the module documentation).
    pub retrieval: f32,
    /// The population prior added to `retrieval` when ranking (see [`PopulationPrior`]).
    pub prior: f32,
    /// Cosine similarity of the author's profile location (through the location encoder) to the city's
    /// prompt, when the post came with a profile location and the city has a prompt.
    pub profile_similarity: Option<f32>,
    /// What the profile adds when ranking: `profile_weight * profile_similarity` (0 without a profile).
    pub profile_bonus: f32,
    /// The place name written in the post that points at this city, when one does.
    pub mention: Option<String>,
    /// Whether a name pointing here is a known place of the knowledge base ([`MentionedCity::known_place`]).
    pub mention_known_place: bool,
    /// What the mention adds when ranking: `mention_weight * strength` (0 without one).
    pub mention_bonus: f32,
    /// The city's share of the BM25 score of the post's lexical matches, when any support post matched.
    pub lexical_share: Option<f32>,
    /// What the lexical vote adds: `lexical_weight * lexical_share`.
    pub lexical_bonus: f32,
    /// What the dense vote adds: `vote_weight *` the city's share of the similarity mass of the support
    /// posts among the post's nearest vectors.
    pub vote_bonus: f32,
    /// What the label head adds (see [`LabelHead::bonus`]; 0 for a city it has no labels of).
    pub label_bonus: f32,
}

impl CityScore {
    /// What the shortlist is ranked by: the retrieval score plus the population prior, the profile and
    /// mention bonuses, the dense and lexical votes and the label head's term.
    pub fn ranking(&self) -> f32 {
        self.retrieval
            + self.prior
            + self.profile_bonus
            + self.mention_bonus
            + self.lexical_bonus
            + self.vote_bonus
            + self.label_bonus
    }
}

/// Temperature of the dense vote's weights `exp(cosine / T)`: a support post 0.05 closer counts e times
/// as much.
const VOTE_TEMPERATURE: f32 = 0.05;

/// Each city's share of the votes of the support posts the post matched: by vectors (similarity-weighted
/// among the nearest neighbours) and by words (BM25-weighted among the lexical matches). Every matching
/// support post votes, so a city with many posts like this one gains more than a city with one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Votes {
    /// City -> share of the dense vote, in [0, 1].
    pub dense: HashMap<CityId, f32>,
    /// City -> share of the lexical vote, in [0, 1].
    pub lexical: HashMap<CityId, f32>,
}

impl Votes {
    /// The votes of the support posts among `neighbours` and `lexical` matches.
    pub fn of(neighbours: &[Neighbour], lexical: &[LexicalHit]) -> Self {
        let supports: Vec<(CityId, f32)> = neighbours
            .iter()
            .filter(|n| n.meta.kind == VectorKind::Support)
            .map(|n| (n.meta.city, n.similarity))
            .collect();
        let top = supports
            .iter()
            .map(|s| s.1)
            .fold(f32::NEG_INFINITY, f32::max);
        let dense = shares(
            supports
                .iter()
                .map(|&(city, sim)| (city, ((sim - top) / VOTE_TEMPERATURE).exp())),
        );
        let lexical = shares(lexical.iter().map(|hit| (hit.city, hit.score.max(0.0))));
        Self { dense, lexical }
    }
}

/// Each city's share of the summed weights.
fn shares(weights: impl Iterator<Item = (CityId, f32)>) -> HashMap<CityId, f32> {
    let mut by_city: HashMap<CityId, f32> = HashMap::new();
    let mut total = 0.0;
    for (city, weight) in weights {
        *by_city.entry(city).or_default() += weight;
        total += weight;
    }
    if total > 0.0 {
        by_city.values_mut().for_each(|w| *w /= total);
    } else {
        by_city.clear();
    }
    by_city
}

/// The population prior: `weight * ln(1 + population)` is added to a city's score, so that among cities a
/// post fits about equally well the larger one wins. A city of unknown population (0: an analyst's city)
/// counts as a typical one of its store (the median of the known populations), neither favoured nor sunk.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PopulationPrior {
    /// `population_prior` of the engine.
    pub weight: f32,
    /// What a city of unknown population counts as.
    pub typical_population: u64,
}

impl PopulationPrior {
    /// The prior of `weight` over the cities of `cities`.
    pub fn over(weight: f32, cities: &CityCache) -> Self {
        Self {
            weight,
            typical_population: if weight > 0.0 {
                cities.median_population()
            } else {
                0
            },
        }
    }

    /// What the prior adds for `population`.
    pub fn of(&self, population: u64) -> f32 {
        let population = if population == 0 {
            self.typical_population
        } else {
            population
        };
        self.weight * (population as f32).ln_1p()
    }
}

/// A city a place name in the post points at.
#[derive(Debug, Clone, PartialEq)]
pub struct MentionedCity {
    /// The stored city.
    pub city: CityId,
    /// The name as the post writes it (the strongest, when several point here).
    pub written: String,
    /// How surely the post's names mean this city, in (0, 1]: per name, its namesakes' population share of
    /// the places that lie within reach of this city; summed over names, capped at 1.
    pub strength: f32,
    /// Whether a name pointing here is a known place of the knowledge base (see
    /// [`crate::geo::mentions::Place::known`]), not only a city's or town's name.
    pub known_place: bool,
}

/// What a post says besides its vector: its author's profile location and the places it names.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostEvidence<'a> {
    /// The profile location, when the post has one.
    pub profile: Option<ProfileEvidence<'a>>,
    /// The cities its place names point at.
    pub mentions: &'a [MentionedCity],
    /// `mention_weight` of the engine.
    pub mention_weight: f32,
    /// The support posts that share the post's words.
    pub lexical: &'a [LexicalHit],
    /// `lexical_weight` of the engine.
    pub lexical_weight: f32,
    /// `vote_weight` of the engine.
    pub vote_weight: f32,
    /// The label head with its scores of the post, when the store has one.
    pub head: Option<(&'a LabelHead, &'a HeadScores)>,
    /// `head.weight` of the engine.
    pub head_weight: f32,
    /// `head.shrink` of the engine.
    pub head_shrink: f32,
}

/// A post's profile location as evidence: its unit vector and the weight of its similarity.
#[derive(Debug, Clone, Copy)]
pub struct ProfileEvidence<'a> {
    /// Unit embedding of the profile location by the location encoder.
    pub vector: &'a [f32],
    /// `profile_weight` of the engine.
    pub weight: f32,
}

/// `w * prompt + (1 - w) * support`, or whichever of the two exists; `None` when neither does.
pub fn combine(prompt: Option<f32>, support: Option<f32>, prompt_weight: f32) -> Option<f32> {
    match (prompt, support) {
        (Some(p), Some(s)) => Some(prompt_weight * p + (1.0 - prompt_weight) * s),
        (Some(p), None) => Some(p),
        (None, Some(s)) => Some(s),
        (None, None) => None,
    }
}

/// Scores one city against a unit query vector.
pub fn score_city(query: &[f32], entry: &CityEntry, prompt_weight: f32) -> Option<CityScore> {
    let prompt_similarity = entry.prompt.as_deref().map(|p| dot(query, p));
    let support_similarity = entry
        .supports
        .iter()
        .map(|s| dot(query, &s.vector))
        .max_by(f32::total_cmp);
    Some(CityScore {
        city: entry.city.id,
        prompt_similarity,
        support_similarity,
        retrieval: combine(prompt_similarity, support_similarity, prompt_weight)?,
        prior: 0.0,
        profile_similarity: None,
        profile_bonus: 0.0,
        mention: None,
        mention_known_place: false,
        mention_bonus: 0.0,
        lexical_share: None,
        lexical_bonus: 0.0,
        vote_bonus: 0.0,
        label_bonus: 0.0,
    })
}

/// [`score_city`] with what ranking adds: the population prior, the profile and mention bonuses, the
/// votes and the label head's term.
pub fn score_for_ranking(
    query: &[f32],
    entry: &CityEntry,
    prompt_weight: f32,
    prior: PopulationPrior,
    evidence: PostEvidence,
    votes: &Votes,
) -> Option<CityScore> {
    let mut score = score_city(query, entry, prompt_weight)?;
    score.prior = prior.of(entry.city.population);
    if let (Some(profile), Some(prompt)) = (evidence.profile, entry.prompt.as_deref()) {
        let similarity = dot(profile.vector, prompt);
        score.profile_similarity = Some(similarity);
        score.profile_bonus = profile.weight * similarity;
    }
    if let Some(mentioned) = evidence.mentions.iter().find(|m| m.city == entry.city.id) {
        score.mention = Some(mentioned.written.clone());
        score.mention_known_place = mentioned.known_place;
        score.mention_bonus = evidence.mention_weight * mentioned.strength;
    }
    let city = entry.city.id;
    score.lexical_share = votes.lexical.get(&city).copied();
    score.lexical_bonus = evidence.lexical_weight * score.lexical_share.unwrap_or(0.0);
    score.vote_bonus = evidence.vote_weight * votes.dense.get(&city).copied().unwrap_or(0.0);
    if let Some((head, scores)) = evidence.head {
        score.label_bonus = head.bonus(scores, city, evidence.head_weight, evidence.head_shrink);
    }
    Some(score)
}

/// The `top_k` best cities among those the `neighbours` belong to, those the post's place names point at,
/// those of its lexical matches and the label head's `top_k` likeliest, best first (ties by city id).
pub fn shortlist(
    query: &[f32],
    neighbours: &[Neighbour],
    cities: &CityCache,
    prompt_weight: f32,
    population_prior: f32,
    evidence: PostEvidence,
    top_k: usize,
) -> Vec<CityScore> {
    let prior = PopulationPrior::over(population_prior, cities);
    let votes = Votes::of(neighbours, evidence.lexical);
    let head_cities = evidence
        .head
        .map(|(head, scores)| head.top_cities(scores, top_k))
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let mut scored: Vec<CityScore> = neighbours
        .iter()
        .map(|n| n.meta.city)
        .chain(evidence.mentions.iter().map(|m| m.city))
        .chain(evidence.lexical.iter().map(|hit| hit.city))
        .chain(head_cities)
        .filter(|&city| seen.insert(city))
        .filter_map(|city| cities.get(city))
        .filter_map(|entry| score_for_ranking(query, entry, prompt_weight, prior, evidence, &votes))
        .collect();
    scored.sort_by(|a, b| {
        b.ranking()
            .total_cmp(&a.ranking())
            .then(a.city.cmp(&b.city))
    });
    scored.truncate(top_k);
    scored
}

/// Searches the index for the `neighbours` nearest vectors to `query` (and to the profile location's vector,
/// when there is one: the cities it names become candidates too) and shortlists their cities, with the cities
/// the post's place names point at.
/// The engine's `neighbours`, `prompt_weight`, `population_prior` and `top_k` are read from `config`.
pub fn retrieve(
    index: &VectorIndex,
    cities: &CityCache,
    query: &[f32],
    evidence: PostEvidence,
    config: &super::EngineConfig,
) -> Result<Vec<CityScore>> {
    let mut found = index.search(query, config.neighbours)?;
    if let Some(profile) = evidence.profile {
        found.extend(index.search(profile.vector, config.neighbours)?);
    }
    Ok(shortlist(
        query,
        &found,
        cities,
        config.prompt_weight,
        config.population_prior,
        evidence,
        config.top_k,
    ))
}

/// The `count` support posts of `entry` most similar to `query`: `(post id, similarity)`, best first.
pub fn best_supports(query: &[f32], entry: &CityEntry, count: usize) -> Vec<(PostId, f32)> {
    let mut scored: Vec<(PostId, f32)> = entry
        .supports
        .iter()
        .map(|s| (s.post, dot(query, &s.vector)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(count);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::snapshot::SupportVector;
    use crate::geo::City;

    fn entry(id: CityId, prompt: Option<Vec<f32>>, supports: Vec<Vec<f32>>) -> CityEntry {
        CityEntry {
            city: City {
                id,
                name: format!("city {id}"),
                admin1: None,
                country: "X".into(),
                country_code: "XX".into(),
                lat: 0.0,
                lon: 0.0,
                population: 0,
                alternate_names: vec![],
            },
            prompt,
            supports: supports
                .into_iter()
                .enumerate()
                .map(|(i, vector)| SupportVector {
                    post: 100 * id + i as u64,
                    vector,
                })
                .collect(),
        }
    }

    #[test]
    fn an_unknown_population_counts_as_the_typical_one_and_a_zero_weight_adds_nothing() {
        let prior = PopulationPrior {
            weight: 0.02,
            typical_population: 50_000,
        };
        assert!((prior.of(0) - prior.of(50_000)).abs() < 1e-9);
        assert!(prior.of(1_000_000) > prior.of(50_000));
        assert_eq!(PopulationPrior::default().of(1_000_000), 0.0);
    }

    #[test]
    fn a_named_city_joins_the_shortlist_with_its_bonus() {
        let query = [1.0, 0.0];
        let cities = CityCache::default().with_additions(
            &[entry(1, None, vec![]).city, entry(2, None, vec![]).city],
            vec![(1, vec![1.0, 0.0]), (2, vec![0.0, 1.0])],
            Vec::new(),
        );
        let mentions = [MentionedCity {
            city: 2,
            written: "city 2".into(),
            strength: 0.5,
            known_place: true,
        }];
        let evidence = PostEvidence {
            mentions: &mentions,
            mention_weight: 2.0,
            ..PostEvidence::default()
        };
        // No HNSW neighbour proposes city 2; the mention does, with 2.0 * 0.5 added to its cosine of 0.
        let ranked = shortlist(&query, &[], &cities, 1.0, 0.0, evidence, 5);
        assert_eq!(ranked.len(), 1);
        assert_eq!(ranked[0].city, 2);
        assert_eq!(ranked[0].mention.as_deref(), Some("city 2"));
        assert!(ranked[0].mention_known_place);
        assert!((ranked[0].ranking() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn combine_weights_prompt_and_support_and_falls_back_to_either() {
        let both = combine(Some(0.4), Some(0.8), 0.5).unwrap();
        assert!((both - 0.6).abs() < 1e-6, "{both}");
        assert_eq!(combine(Some(0.4), Some(0.8), 1.0), Some(0.4));
        assert_eq!(combine(Some(0.4), None, 0.5), Some(0.4));
        assert_eq!(combine(None, Some(0.8), 0.5), Some(0.8));
        assert_eq!(combine(None, None, 0.5), None);
    }

    #[test]
    fn a_city_is_scored_by_its_best_support_and_its_prompt() {
        let query = [1.0, 0.0];
        let city = entry(
            1,
            Some(vec![0.0, 1.0]),
            vec![vec![0.6, 0.8], vec![1.0, 0.0]],
        );
        let score = score_city(&query, &city, 0.25).unwrap();
        assert_eq!(score.prompt_similarity, Some(0.0));
        assert_eq!(score.support_similarity, Some(1.0));
        assert!((score.retrieval - 0.75).abs() < 1e-6);
        assert_eq!(best_supports(&query, &city, 1), vec![(101, 1.0)]);
        assert!(score_city(&query, &entry(2, None, vec![]), 0.5).is_none());
    }
}
