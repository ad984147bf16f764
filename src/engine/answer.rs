//! What a query returns: the answered city, its ranked alternatives and the support posts behind it.

use serde::{Deserialize, Serialize};

use super::snapshot::CityCache;
use crate::geo::{City, CityId};
use contrastgeo_index::PostId;

/// One ranked city of an answer's shortlist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Candidate {
    /// GeoNames id.
    pub city_id: CityId,
    /// City name.
    pub name: String,
    /// State or region, when the gazetteer has one.
    pub admin1: Option<String>,
    /// Country name.
    pub country: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Final score in logit units: `retrieval_score / tau`, plus `tlm_logit` when the TLM head reranked.
    pub score: f32,
    /// Softmax of `score` over the shortlist.
    pub probability: f32,
    /// `prompt_weight * prompt_similarity + (1 - prompt_weight) * support_similarity` (cosine scale); the one
    /// similarity that exists when the city lacks a prompt or support vectors.
    pub retrieval_score: f32,
    /// Cosine similarity of the post to the city's location prompt.
    pub prompt_similarity: Option<f32>,
    /// Highest cosine similarity of the post to the city's support posts.
    pub support_similarity: Option<f32>,
    /// The TLM head's matching logit, when it reranked.
    pub tlm_logit: Option<f32>,
    /// The place name written in the post that points at this city (the city itself, or a place within
    /// 50 km of it), when one does; it added `mention_weight * strength` to the city's score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mention: Option<String>,
    /// Whether a place the post names here is a known place of the knowledge base (a landmark,
    /// neighbourhood, street, venue, team, university, park, region or airport), not only a city's or
    /// town's name: the world store calibrates the answers such a name points at on their own (see
    /// [`super::EngineConfig::known_place_calibration`]). Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mention_known_place: bool,
    /// The city's share of the BM25 score of the support posts that share the post's words, when any of
    /// its posts does; it added `lexical_weight * share` to the city's score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical_share: Option<f32>,
    /// What the label head (the classifier fitted on the store's labels) added to the city's score (cosine
    /// scale), when the store has one and the city has labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_score: Option<f32>,
}

/// A support post of the answered city that resembles the query, shown as evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Evidence {
    /// The support post's id in the store.
    pub post_id: PostId,
    /// What it says.
    pub text: String,
    /// Where it came from (file name, `ingest`, ...).
    pub source: String,
    /// Cosine similarity to the query post.
    pub similarity: f32,
    /// How it was found: among the post's nearest vectors (`vector`), by the words it shares with the
    /// post (`words`, BM25), or both.
    #[serde(default)]
    pub matched_by: MatchedBy,
    /// Its BM25 score for the post's words, when it was found by them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bm25: Option<f32>,
}

/// How an evidence post was found.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MatchedBy {
    /// One of the answered city's support posts nearest to the post's vector.
    #[default]
    Vector,
    /// One of the answered city's support posts sharing the post's words best (BM25).
    Words,
    /// Among the nearest by vector, and sharing words with the post too.
    Both,
}

/// Where a post was most likely written, with the shortlist and evidence behind the guess.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Answer {
    /// "Name, region, country" of the answered city, or `null` when the engine abstains: the answer's
    /// `probability` (its confidence) is below the engine's `min_confidence`. The best guess and the
    /// shortlist are still given in full.
    pub city: Option<String>,
    /// GeoNames id of the answered city.
    pub city_id: CityId,
    /// City name.
    pub name: String,
    /// State or region, when the gazetteer has one.
    pub admin1: Option<String>,
    /// Country name.
    pub country: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// The answered city's final score (see [`Candidate::score`]).
    pub score: f32,
    /// The answered city's probability among the shortlist.
    pub probability: f32,
    /// The shortlist, best first (the answer is its first entry).
    pub top_k: Vec<Candidate>,
    /// The answered city's support posts most similar to the query, best first.
    pub evidence: Vec<Evidence>,
}

impl Candidate {
    /// A candidate for `city` with its scores; `probability` is filled in by [`rank`].
    pub(crate) fn new(city: &City, score: f32, scored: &super::retrieve::CityScore) -> Self {
        Self {
            city_id: city.id,
            name: city.name.clone(),
            admin1: city.admin1.clone(),
            country: city.country.clone(),
            lat: city.lat,
            lon: city.lon,
            score,
            probability: 0.0,
            retrieval_score: scored.retrieval,
            prompt_similarity: scored.prompt_similarity,
            support_similarity: scored.support_similarity,
            tlm_logit: None,
            mention: scored.mention.clone(),
            mention_known_place: scored.mention_known_place,
            lexical_share: scored.lexical_share,
            label_score: (scored.label_bonus != 0.0).then_some(scored.label_bonus),
        }
    }
}

/// Sorts candidates best first (score, then city id for ties) and fills in their softmax probabilities.
pub fn rank(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.city_id.cmp(&b.city_id)));
    let top = candidates.first().map_or(0.0, |c| c.score);
    let weights: Vec<f64> = candidates
        .iter()
        .map(|c| f64::from(c.score - top).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    for (candidate, weight) in candidates.iter_mut().zip(weights) {
        candidate.probability = (weight / total) as f32;
    }
}

/// "Name, region, country".
fn label(c: &Candidate) -> String {
    let mut parts = vec![c.name.as_str()];
    parts.extend(
        c.admin1
            .as_deref()
            .filter(|a| !a.is_empty() && *a != c.name),
    );
    parts.push(c.country.as_str());
    parts.join(", ")
}

/// Answers a neighbourhood-like candidate as the city it belongs to (see [`CityCache::collapses_into`]):
/// its candidate takes that city's name and place, and candidates that end up as the same city are merged
/// (probabilities added; scores and similarities are those of the best-ranked one). Re-sorted by probability.
pub fn collapse(candidates: &mut Vec<Candidate>, cities: &CityCache, radius_km: f32) {
    if radius_km <= 0.0 {
        return;
    }
    let mut merged: Vec<Candidate> = Vec::with_capacity(candidates.len());
    for mut candidate in candidates.drain(..) {
        let mut root = candidate.city_id;
        // A suburb of a suburb: follow a few steps up.
        for _ in 0..4 {
            match cities.collapses_into(root, radius_km) {
                Some(parent) if parent != root => root = parent,
                _ => break,
            }
        }
        if let Some(existing) = merged.iter_mut().find(|m| m.city_id == root) {
            existing.probability += candidate.probability;
            continue;
        }
        if root != candidate.city_id {
            if let Some(parent) = cities.get(root) {
                let city = &parent.city;
                candidate.city_id = city.id;
                candidate.name = city.name.clone();
                candidate.admin1 = city.admin1.clone();
                candidate.country = city.country.clone();
                candidate.lat = city.lat;
                candidate.lon = city.lon;
            }
        }
        merged.push(candidate);
    }
    merged.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then(b.score.total_cmp(&a.score))
            .then(a.city_id.cmp(&b.city_id))
    });
    *candidates = merged;
}

/// Platt scaling of the answer's probability: `sigmoid(slope * logit(p) + intercept)`, fitted so that the
/// probability a store reports is the chance that the post was written within 161 km of the answered city
/// (`tools/calibrate.py` fits it; the zero-shot world store uses
/// [`super::WORLD_CALIBRATION`]). The shortlist's own probabilities stay the softmax of its scores; only the
/// answer's is mapped, and the abstain threshold is compared with the mapped one. Slope 1 and intercept 0
/// leave it as it is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Multiplies the log-odds: below 1 tempers confident answers, above 1 sharpens them.
    pub slope: f32,
    /// Added to the log-odds: below 0 lowers every probability.
    pub intercept: f32,
}

impl Calibration {
    /// No change.
    pub const IDENTITY: Calibration = Calibration {
        slope: 1.0,
        intercept: 0.0,
    };

    /// The calibrated probability of a shortlist probability `p`.
    pub fn apply(&self, p: f32) -> f32 {
        if *self == Self::IDENTITY {
            return p;
        }
        let p = f64::from(p).clamp(1e-6, 1.0 - 1e-6);
        let z = f64::from(self.slope) * (p / (1.0 - p)).ln() + f64::from(self.intercept);
        (1.0 / (1.0 + (-z).exp())) as f32
    }
}

impl Default for Calibration {
    fn default() -> Self {
        Self::IDENTITY
    }
}

impl Answer {
    /// The answer with its probability calibrated (see [`Calibration`]): by `known_place` when it is given
    /// and the answered city is named by a known place of the knowledge base, else by `calibration`.
    pub(crate) fn calibrated(
        mut self,
        calibration: Calibration,
        known_place: Option<Calibration>,
    ) -> Self {
        let named = self
            .top_k
            .first()
            .is_some_and(|c| c.city_id == self.city_id && c.mention_known_place);
        let calibration = match known_place {
            Some(known_place) if named => known_place,
            _ => calibration,
        };
        self.probability = calibration.apply(self.probability);
        self
    }

    /// Withholds the city label when the answer's confidence is below `min_confidence`.
    pub(crate) fn abstain_below(mut self, min_confidence: f32) -> Self {
        if self.probability < min_confidence {
            self.city = None;
        }
        self
    }

    /// The answer for a ranked, non-empty shortlist.
    pub(crate) fn from_ranked(top_k: Vec<Candidate>, evidence: Vec<Evidence>) -> Option<Self> {
        let best = top_k.first()?.clone();
        Some(Self {
            city: Some(label(&best)),
            city_id: best.city_id,
            name: best.name,
            admin1: best.admin1,
            country: best.country,
            lat: best.lat,
            lon: best.lon,
            score: best.score,
            probability: best.probability,
            top_k,
            evidence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: CityId, score: f32) -> Candidate {
        Candidate {
            city_id: id,
            name: format!("c{id}"),
            admin1: None,
            country: "X".into(),
            lat: 0.0,
            lon: 0.0,
            score,
            probability: 0.0,
            retrieval_score: 0.0,
            prompt_similarity: None,
            support_similarity: None,
            tlm_logit: None,
            mention: None,
            mention_known_place: false,
            lexical_share: None,
            label_score: None,
        }
    }

    #[test]
    fn an_answer_named_by_a_known_place_is_calibrated_by_its_own_pair() {
        let general = Calibration {
            slope: 0.5,
            intercept: -2.0,
        };
        let known = Calibration {
            slope: 0.5,
            intercept: 0.0,
        };
        let answer = |named: bool| {
            let mut candidates = vec![candidate(1, 2.0), candidate(2, 1.0)];
            candidates[0].mention = Some("Atomium".into());
            candidates[0].mention_known_place = named;
            Answer::from_ranked(candidates, Vec::new()).unwrap()
        };
        let raw = answer(true).probability;
        assert_eq!(
            answer(true).calibrated(general, Some(known)).probability,
            known.apply(raw)
        );
        assert_eq!(
            answer(false).calibrated(general, Some(known)).probability,
            general.apply(raw)
        );
        // Without a pair of their own, every answer takes the general one.
        assert_eq!(
            answer(true).calibrated(general, None).probability,
            general.apply(raw)
        );
        // A known place naming a city other than the answer does not count.
        let mut candidates = vec![candidate(1, 2.0), candidate(2, 1.0)];
        candidates[1].mention_known_place = true;
        let other = Answer::from_ranked(candidates, Vec::new()).unwrap();
        assert_eq!(
            other.calibrated(general, Some(known)).probability,
            general.apply(raw)
        );
    }

    #[test]
    fn calibration_is_monotone_and_the_identity_changes_nothing() {
        let world = Calibration {
            slope: 1.2,
            intercept: -1.6,
        };
        let ps = [0.01f32, 0.2, 0.4, 0.6, 0.97, 1.0];
        for p in ps {
            assert_eq!(Calibration::IDENTITY.apply(p), p);
        }
        let mapped: Vec<f32> = ps.iter().map(|&p| world.apply(p)).collect();
        assert!(mapped.windows(2).all(|w| w[0] < w[1]), "{mapped:?}");
        assert!(mapped.iter().all(|p| (0.0..=1.0).contains(p)));
        // A negative intercept lowers a middling probability: 0.4 -> sigmoid(1.2 ln(2/3) - 1.6) = 0.110.
        assert!(
            (world.apply(0.4) - 0.110).abs() < 1e-3,
            "{}",
            world.apply(0.4)
        );
    }

    #[test]
    fn rank_sorts_best_first_and_probabilities_are_a_softmax() {
        let mut c = vec![candidate(3, 1.0), candidate(1, 3.0), candidate(2, 1.0)];
        rank(&mut c);
        let ids: Vec<CityId> = c.iter().map(|c| c.city_id).collect();
        assert_eq!(ids, vec![1, 2, 3], "ties broken by city id");
        let total: f32 = c.iter().map(|c| c.probability).sum();
        assert!((total - 1.0).abs() < 1e-6);
        let expected = 1.0 / (1.0 + 2.0 * (-2f64).exp());
        assert!((f64::from(c[0].probability) - expected).abs() < 1e-6);
        // Huge logits do not overflow.
        let mut big = vec![candidate(1, 1e4), candidate(2, 1e4 - 1.0)];
        rank(&mut big);
        assert!(big.iter().all(|c| c.probability.is_finite()));
    }
}
