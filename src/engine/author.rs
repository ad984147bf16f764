//! One answer for an author from all of their posts.
//!
//! Summing each post's shortlist probabilities is weak (measured on the benchmark, README "Authors"): each
//! post's shortlist is a different truncated set of cities, and a post with no place signal spreads its
//! mass as loudly as one that names a street. The rule here fixes both:
//!
//! 1. **One shared candidate set**: the union of the shortlists of all the author's posts.
//! 2. **Every post scores every shared candidate**: a city on the post's own shortlist keeps its final score
//!    (retrieval / tau, plus the TLM logit when the head reranked); a city outside it is scored exactly from
//!    the post's vector (retrieval / tau), plus the lowest logit of the post's own shortlist when the head
//!    reranked (the head was not asked; the least it gave is a fair stand-in for a city retrieval did not
//!    propose). A softmax over the shared set gives each post a distribution `q_p`.
//! 3. **Posts weigh by what they say**: `w_p = 1 - H(q_p) / ln |U|`, 0 for a post whose distribution is flat
//!    (no place signal), 1 for one sure of a single city.
//! 4. **Combination** ([`AuthorRule`]): a weighted product `exp(sum_p w_p ln q_p)`, renormalised (default:
//!    weak but consistent evidence adds up; the population prior, when on, and the label-count prior of a
//!    store with a label head are taken out of each `q_p` and counted once), or a weighted mixture `sum_p w_p q_p / sum_p w_p`. On the
//!    benchmark's authors with >= 5 test posts (K=5, seed 0, 214 authors) the product gives Acc@161km 0.327
//!    and the mixture 0.280, against 0.257 for their posts one by one.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::answer::{rank, Answer, Candidate};
use super::retrieve::{score_city, score_for_ranking, PopulationPrior, Votes};
use super::snapshot::CityCache;
use super::Located;
use crate::geo::CityId;

/// How an author's per-post distributions combine.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum AuthorRule {
    /// Weighted sum of the posts' log-probabilities (a product of experts).
    #[default]
    Product,
    /// Weighted mean of the posts' probabilities.
    Mixture,
}

/// One of an author's posts that weighed in the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WeighingPost {
    /// Position of the post among the author's posts.
    pub index: usize,
    /// Its weight `w_p` in [0, 1] (1 - normalised entropy of its distribution).
    pub weight: f32,
    /// The probability the post alone gives the answered city over the shared candidates.
    pub probability: f32,
}

/// Where an author most likely writes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuthorAnswer {
    /// The answer: city, shortlist with the author-level probabilities, and the support-post evidence of the
    /// post that weighed most for the answered city.
    #[serde(flatten)]
    pub answer: Answer,
    /// How many posts the answer used.
    pub posts_used: usize,
    /// The posts that weighed most for the answered city (`weight * probability`), best first, at most 3.
    pub weighing_posts: Vec<WeighingPost>,
}

/// What the aggregation needs from the engine.
pub(crate) struct Scoring<'a> {
    pub cities: &'a CityCache,
    pub prompt_weight: f32,
    pub population_prior: f32,
    /// The weights of what posts say besides their vectors.
    pub weights: super::EvidenceWeights,
    pub head: Option<&'a super::label_head::LabelHead>,
    pub min_confidence: f32,
    pub calibration: super::answer::Calibration,
    pub tau: f32,
    pub top_k: usize,
}

/// Posts named as the evidence of an author's answer.
const WEIGHING_POSTS: usize = 3;

/// The author answer for `posts` (each post's own answer and unit query vector); `None` when there are none.
pub(crate) fn aggregate(
    posts: &[Located],
    scoring: &Scoring,
    rule: AuthorRule,
) -> Option<AuthorAnswer> {
    let mut shared: Vec<CityId> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for located in posts {
        for candidate in &located.answer.top_k {
            if seen.insert(candidate.city_id) {
                shared.push(candidate.city_id);
            }
        }
    }
    if shared.is_empty() {
        return None;
    }
    // The population prior is a belief about the author, not evidence from each post: the product takes it
    // out of every post's distribution and counts it once (else n posts would apply it n times). A mixture
    // of posteriors that each hold it once holds it once.
    // The store's label counts are the same kind of belief, inside every post's score: the label head's
    // bias learns them, and a post that says nothing local still finds the labelled posts of a city in
    // proportion to their number, so its lexical and dense votes hold the city's label share. Counted in
    // each of an author's posts they would pull every author towards the most labelled cities (measured
    // at K = all, authors with >= 5 posts: Acc@161km 0.425 counted per post, 0.491 counted once).
    let prior = PopulationPrior::over(scoring.population_prior, scoring.cities);
    let label_count_prior = |city: CityId| {
        scoring.head.map_or(0.0, |head| {
            let weights = scoring.weights;
            head.prior_bonus(city, weights.head, weights.head_shrink)
                + (weights.lexical + weights.vote) * head.label_share(city)
        })
    };
    let prior_of = |city: CityId| {
        scoring.cities.get(city).map_or(0.0, |e| {
            f64::from((prior.of(e.city.population) + label_count_prior(city)) / scoring.tau)
        })
    };
    let prior_once = rule == AuthorRule::Product && (prior.weight > 0.0 || scoring.head.is_some());
    // Each shared city's prior, once for all the posts (0 where it is not taken out).
    let priors: Vec<f64> = shared
        .iter()
        .map(|&city| if prior_once { prior_of(city) } else { 0.0 })
        .collect();
    let distributions: Vec<Vec<f64>> = posts
        .iter()
        .map(|located| post_distribution(located, &shared, scoring, prior, &priors))
        .collect();
    let weights: Vec<f64> = distributions.iter().map(|q| informativeness(q)).collect();
    let total_weight: f64 = weights.iter().sum();
    // All posts flat: every post counts the same (the answer is then as unsure as they are).
    let weights: Vec<f64> = if total_weight > 1e-9 {
        weights
    } else {
        vec![1.0; posts.len()]
    };
    let weight_sum: f64 = weights.iter().sum();
    let combined: Vec<f64> = (0..shared.len())
        .map(|c| match rule {
            AuthorRule::Mixture => {
                let mass: f64 = distributions
                    .iter()
                    .zip(&weights)
                    .map(|(q, w)| w * q[c])
                    .sum();
                (mass / weight_sum).max(f64::MIN_POSITIVE).ln()
            }
            AuthorRule::Product => {
                let evidence: f64 = distributions
                    .iter()
                    .zip(&weights)
                    .map(|(q, w)| w * q[c].max(f64::MIN_POSITIVE).ln())
                    .sum();
                evidence + priors[c]
            }
        })
        .collect();
    let mut candidates: Vec<Candidate> = shared
        .iter()
        .zip(&combined)
        .filter_map(|(&city, &score)| {
            let entry = scoring.cities.get(city)?;
            let retrieval = posts
                .iter()
                .filter_map(|l| score_city(&l.query, entry, scoring.prompt_weight))
                .map(|s| s.retrieval)
                .sum::<f32>()
                / posts.len() as f32;
            let mut candidate = Candidate::new(
                &entry.city,
                score as f32,
                &super::retrieve::CityScore {
                    city,
                    prompt_similarity: None,
                    support_similarity: None,
                    retrieval,
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
                },
            );
            candidate.tlm_logit = None;
            Some(candidate)
        })
        .collect();
    rank(&mut candidates);
    candidates.truncate(scoring.top_k.max(1));
    let best = candidates.first()?.city_id;
    let best_column = shared.iter().position(|&c| c == best)?;
    let mut weighing: Vec<WeighingPost> = distributions
        .iter()
        .zip(&weights)
        .enumerate()
        .map(|(index, (q, &w))| WeighingPost {
            index,
            weight: w as f32,
            probability: q[best_column] as f32,
        })
        .collect();
    weighing.sort_by(|a, b| {
        (b.weight * b.probability)
            .total_cmp(&(a.weight * a.probability))
            .then(a.index.cmp(&b.index))
    });
    weighing.truncate(WEIGHING_POSTS);
    // The evidence of the post that weighed most, when that post answered the same city.
    let evidence = weighing
        .first()
        .map(|w| &posts[w.index].answer)
        .filter(|a| a.city_id == best)
        .map(|a| a.evidence.clone())
        .unwrap_or_default();
    Some(AuthorAnswer {
        answer: Answer::from_ranked(candidates, evidence)?
            .calibrated(scoring.calibration, None)
            .abstain_below(scoring.min_confidence),
        posts_used: posts.len(),
        weighing_posts: weighing,
    })
}

/// A post's probabilities over the `shared` candidates (see the module documentation, step 2), scored with
/// `prior` like its own shortlist was, with `less[c]` taken off the score of `shared[c]` first.
fn post_distribution(
    located: &Located,
    shared: &[CityId],
    scoring: &Scoring,
    prior: PopulationPrior,
    less: &[f64],
) -> Vec<f64> {
    let (answer, query) = (&located.answer, located.query.as_slice());
    let evidence = located.signals.evidence(scoring.weights, scoring.head);
    // The dense vote is known only for the cities among the post's nearest vectors, which are on its own
    // shortlist; a city outside it is scored with the lexical vote alone.
    let votes = Votes::of(&[], evidence.lexical);
    let own: HashMap<CityId, f32> = answer.top_k.iter().map(|c| (c.city_id, c.score)).collect();
    let least_logit = answer
        .top_k
        .iter()
        .filter_map(|c| c.tlm_logit)
        .min_by(f32::total_cmp)
        .unwrap_or(0.0);
    let scores: Vec<f64> = shared
        .iter()
        .zip(less)
        .map(|(city, less)| {
            let score = own.get(city).copied().or_else(|| {
                let scored = score_for_ranking(
                    query,
                    scoring.cities.get(*city)?,
                    scoring.prompt_weight,
                    prior,
                    evidence,
                    &votes,
                )?;
                Some(scored.ranking() / scoring.tau + least_logit)
            });
            score.map_or(f64::NEG_INFINITY, |s| f64::from(s) - less)
        })
        .collect();
    softmax(&scores)
}

fn softmax(scores: &[f64]) -> Vec<f64> {
    let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
    let total: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / total).collect()
}

/// `1 - H(q) / ln n`: 0 for a uniform distribution, 1 for a certain one (1 when there is one candidate).
fn informativeness(q: &[f64]) -> f64 {
    if q.len() < 2 {
        return 1.0;
    }
    let entropy: f64 = q.iter().filter(|&&p| p > 0.0).map(|&p| -p * p.ln()).sum();
    (1.0 - entropy / (q.len() as f64).ln()).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn informativeness_is_zero_when_flat_and_one_when_certain() {
        assert!(informativeness(&[0.25; 4]).abs() < 1e-12);
        assert!((informativeness(&[1.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
        let middling = informativeness(&[0.7, 0.2, 0.1]);
        assert!(middling > 0.1 && middling < 0.9, "{middling}");
    }

    #[test]
    fn softmax_sums_to_one_and_gives_nothing_to_missing_cities() {
        let q = softmax(&[1.0, 2.0, f64::NEG_INFINITY]);
        assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(q[2], 0.0);
        assert!(q[1] > q[0]);
    }
}
