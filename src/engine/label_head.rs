//! The label head: a per-city linear classifier fitted on a store's own labelled posts, so that a store
//! with hundreds of labels per city answers better than one with five.
//!
//! Retrieval scores a city by its prompt and its nearest support posts; it cannot tell 300 labels from 5.
//! The head is a multinomial logistic regression over two views of a post: its words (TF-IDF of word
//! unigrams and bigrams, sublinear term frequency, L2-normalised: the local vocabulary a sentence embedding
//! drops) and its embedding (the post encoder's unit vector). It is fitted on every support post of the
//! store (AdaGrad, L2-regularised, a fixed number of epochs: seconds for tens of thousands of posts) when a
//! snapshot opens and again after labels arrive.
//!
//! Its bias learns how often each city is labelled, which is the label-count prior: on a store whose labels
//! come in the proportions posts do, larger cities gain; on a K-shot store every city has the same prior.
//!
//! What the ranking adds ([`LabelHead::bonus`]) is `weight * n / (n + shrink) * ln(C * p(city | post))`:
//! the log of how much likelier the head finds the city than a uniform guess over its `C` cities, trusted
//! more as the city's label count `n` grows. A city the head has no labels of (a zero-shot prompt, a city
//! just added) gains nothing either way.

use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::geo::CityId;

/// Settings of the label head (part of the engine configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeadConfig {
    /// Weight of the head's log-odds in the ranking (cosine scale); 0 switches the head off (no fit).
    pub weight: f32,
    /// Label count at which a city's head term counts half (`n / (n + shrink)`).
    pub shrink: f32,
    /// Passes over the labelled posts when fitting.
    pub epochs: usize,
    /// L2 regularisation per post (sklearn's `1 / C`, divided by the number of posts).
    pub l2: f32,
    /// AdaGrad's base learning rate.
    pub learning_rate: f32,
    /// Scale of the embedding against the (unit) TF-IDF vector.
    pub embedding_scale: f32,
    /// A word or bigram must occur in at least this many labelled posts to be a feature.
    pub min_posts_per_term: usize,
    /// Fewer labelled posts than this in a store: no head.
    pub min_posts: usize,
    /// Also read the character 3- to 5-grams of each word (with its boundaries): hashtags that run words
    /// together, misspellings and inflections share them with the labelled posts' words.
    pub char_ngrams: bool,
    /// How much of the label-count prior the ranking keeps (1: all of it, as fitted; 0: none, as if every
    /// city had as many labels).
    pub prior_strength: f32,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            weight: 0.05,
            shrink: 8.0,
            epochs: 8,
            l2: 0.1,
            learning_rate: 0.5,
            embedding_scale: 1.0,
            min_posts_per_term: 1,
            min_posts: 2,
            char_ngrams: false,
            prior_strength: 1.0,
        }
    }
}

/// One labelled post to fit on: its city, text and unit embedding.
#[derive(Debug, Clone, Copy)]
pub struct LabelledExample<'a> {
    /// The city it was written in.
    pub city: CityId,
    /// What it says.
    pub text: &'a str,
    /// Its unit embedding by the post encoder.
    pub embedding: &'a [f32],
}

/// A fitted label head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelHead {
    /// Term -> feature index.
    vocabulary: HashMap<String, u32>,
    /// Inverse document frequency per feature.
    idf: Vec<f32>,
    /// The cities, in class order.
    classes: Vec<CityId>,
    /// City -> class.
    class_of: HashMap<CityId, usize>,
    /// Labelled posts per class.
    labels: Vec<usize>,
    /// `features x classes`, then `dimension x classes`, then `classes` biases.
    weights: Vec<f32>,
    dimension: usize,
    config: HeadConfig,
}

/// The words of `text` as sklearn's default `\b\w\w+\b` finds them, lowercased.
fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            current.extend(c.to_lowercase());
        } else if !current.is_empty() {
            if current.chars().nth(1).is_some() {
                words.push(std::mem::take(&mut current));
            } else {
                current.clear();
            }
        }
    }
    if current.chars().nth(1).is_some() {
        words.push(current);
    }
    words
}

/// Word unigrams and bigrams of `text` (and, with `char_ngrams`, the character 3- to 5-grams of each word
/// marked at its boundaries, as `|<ab|`), each once per occurrence.
fn terms(text: &str, char_ngrams: bool) -> Vec<String> {
    let words = words(text);
    let bigrams = words.windows(2).map(|w| format!("{} {}", w[0], w[1]));
    let mut terms: Vec<String> = bigrams.collect();
    if char_ngrams {
        for word in &words {
            let chars: Vec<char> = std::iter::once('<')
                .chain(word.chars())
                .chain(std::iter::once('>'))
                .collect();
            for n in 3..=5 {
                for gram in chars.windows(n) {
                    let mut term = String::from("|");
                    term.extend(gram);
                    terms.push(term);
                }
            }
        }
    }
    terms.extend(words);
    terms
}

impl LabelHead {
    /// Fits a head on `examples`; `None` when there are too few posts or fewer than two cities, or the
    /// head is switched off.
    pub fn fit(examples: &[LabelledExample], config: &HeadConfig) -> Option<Self> {
        if config.weight <= 0.0 || examples.len() < config.min_posts.max(2) {
            return None;
        }
        let mut classes: Vec<CityId> = examples.iter().map(|e| e.city).collect();
        classes.sort_unstable();
        classes.dedup();
        if classes.len() < 2 {
            return None;
        }
        let dimension = examples[0].embedding.len();
        if examples.iter().any(|e| e.embedding.len() != dimension) {
            return None;
        }
        let class_of: HashMap<CityId, usize> =
            classes.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        let mut labels = vec![0usize; classes.len()];
        for e in examples {
            labels[class_of[&e.city]] += 1;
        }

        // Vocabulary: terms in at least `min_posts_per_term` posts, in sorted order (deterministic).
        let post_terms: Vec<Vec<String>> = examples
            .iter()
            .map(|e| terms(e.text, config.char_ngrams))
            .collect();
        let mut document_frequency: HashMap<&str, usize> = HashMap::new();
        for own in &post_terms {
            let mut distinct: Vec<&str> = own.iter().map(String::as_str).collect();
            distinct.sort_unstable();
            distinct.dedup();
            for term in distinct {
                *document_frequency.entry(term).or_default() += 1;
            }
        }
        let mut kept: Vec<(&str, usize)> = document_frequency
            .into_iter()
            .filter(|&(_, df)| df >= config.min_posts_per_term)
            .collect();
        kept.sort_unstable();
        let posts = examples.len() as f32;
        let idf = kept
            .iter()
            .map(|&(_, df)| ((1.0 + posts) / (1.0 + df as f32)).ln() + 1.0)
            .collect();
        let vocabulary = kept
            .iter()
            .enumerate()
            .map(|(i, &(term, _))| (term.to_owned(), i as u32))
            .collect();
        let mut head = Self {
            vocabulary,
            idf,
            class_of,
            labels,
            weights: Vec::new(),
            dimension,
            config: config.clone(),
            classes,
        };
        let features: Vec<Vec<(u32, f32)>> = post_terms
            .iter()
            .map(|own| head.tf_idf(own.iter().map(String::as_str)))
            .collect();
        head.train(examples, &features);
        Some(head)
    }

    /// The L2-normalised TF-IDF vector (sublinear tf) of a post's terms, as (feature, value) pairs.
    fn tf_idf<'t>(&self, terms: impl Iterator<Item = &'t str>) -> Vec<(u32, f32)> {
        let mut counts: HashMap<u32, f32> = HashMap::new();
        for term in terms {
            if let Some(&feature) = self.vocabulary.get(term) {
                *counts.entry(feature).or_default() += 1.0;
            }
        }
        let mut vector: Vec<(u32, f32)> = counts
            .into_iter()
            .map(|(f, tf)| (f, (1.0 + tf.ln()) * self.idf[f as usize]))
            .collect();
        vector.sort_unstable_by_key(|&(f, _)| f);
        let norm = vector.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|(_, v)| *v /= norm);
        }
        vector
    }

    fn dense_offset(&self) -> usize {
        self.vocabulary.len() * self.classes.len()
    }

    fn bias_offset(&self) -> usize {
        self.dense_offset() + self.dimension * self.classes.len()
    }

    /// The head's logits for a post.
    fn logits(&self, sparse: &[(u32, f32)], embedding: &[f32]) -> Vec<f32> {
        let classes = self.classes.len();
        let mut logits = self.weights[self.bias_offset()..].to_vec();
        for &(f, x) in sparse {
            let row = &self.weights[f as usize * classes..(f as usize + 1) * classes];
            logits.iter_mut().zip(row).for_each(|(l, w)| *l += x * w);
        }
        let dense = self.dense_offset();
        let scale = self.config.embedding_scale;
        for (d, &x) in embedding.iter().enumerate().take(self.dimension) {
            let row = &self.weights[dense + d * classes..dense + (d + 1) * classes];
            logits
                .iter_mut()
                .zip(row)
                .for_each(|(l, w)| *l += scale * x * w);
        }
        logits
    }

    /// AdaGrad on the cross-entropy with L2 regularisation applied to the weights a post touches.
    fn train(&mut self, examples: &[LabelledExample], features: &[Vec<(u32, f32)>]) {
        let classes = self.classes.len();
        self.weights = vec![0.0; self.bias_offset() + classes];
        let mut squared = vec![1e-8f32; self.weights.len()];
        let rate = self.config.learning_rate;
        let l2 = self.config.l2 / examples.len() as f32;
        let dense = self.dense_offset();
        let bias = self.bias_offset();
        let scale = self.config.embedding_scale;
        let mut order: Vec<usize> = (0..examples.len()).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x1abe1);
        for _ in 0..self.config.epochs {
            order.shuffle(&mut rng);
            for &i in &order {
                let example = &examples[i];
                let mut gradient = self.logits(&features[i], example.embedding);
                softmax_in_place(&mut gradient);
                gradient[self.class_of[&example.city]] -= 1.0;
                let step = |at: usize, x: f32, weights: &mut [f32], squared: &mut [f32]| {
                    for (c, &g) in gradient.iter().enumerate() {
                        let k = at + c;
                        let grad = g * x + l2 * weights[k];
                        squared[k] += grad * grad;
                        weights[k] -= rate * grad / squared[k].sqrt();
                    }
                };
                for &(f, x) in &features[i] {
                    step(f as usize * classes, x, &mut self.weights, &mut squared);
                }
                for (d, &x) in example.embedding.iter().enumerate() {
                    step(
                        dense + d * classes,
                        scale * x,
                        &mut self.weights,
                        &mut squared,
                    );
                }
                step(bias, 1.0, &mut self.weights, &mut squared);
            }
        }
    }

    /// `ln p(city | post)` for every city the head knows, by city id.
    pub fn log_probabilities(&self, text: &str, embedding: &[f32]) -> HeadScores {
        let terms = terms(text, self.config.char_ngrams);
        let sparse = self.tf_idf(terms.iter().map(String::as_str));
        let mut logits = self.logits(&sparse, embedding);
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_sum = logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln() + max;
        logits.iter_mut().for_each(|l| *l -= log_sum);
        HeadScores { log_probs: logits }
    }

    /// What the ranking adds for `city` given the post's scores, `weight * n / (n + shrink) * ln(C p)` (see
    /// the module documentation; the engine passes its head weight and shrink); 0 for a city the head has
    /// no labels of.
    pub fn bonus(&self, scores: &HeadScores, city: CityId, weight: f32, shrink: f32) -> f32 {
        let Some(&class) = self.class_of.get(&city) else {
            return 0.0;
        };
        let labels = self.labels[class] as f32;
        let trust = labels / (labels + shrink);
        let log_odds = scores.log_probs[class] + (self.classes.len() as f32).ln();
        weight * trust * log_odds
            - (1.0 - self.config.prior_strength) * self.prior_bonus(city, weight, shrink)
    }

    /// The part of [`LabelHead::bonus`] that is the same for every post: `weight * n / (n + shrink) *
    /// ln(C n / N)`, the head's label-count prior (a logistic regression's probabilities average to the
    /// label frequencies it was fitted on). Combining several posts of one author takes it out of each post
    /// and counts it once; 0 for a city the head has no labels of, and for every city of a balanced store.
    pub fn prior_bonus(&self, city: CityId, weight: f32, shrink: f32) -> f32 {
        let Some(&class) = self.class_of.get(&city) else {
            return 0.0;
        };
        let labels = self.labels[class] as f32;
        let trust = labels / (labels + shrink);
        weight * trust * (self.classes.len() as f32 * self.label_share(city)).ln()
    }

    /// The share of the store's labelled posts that `city` holds (0 for a city without labels).
    pub fn label_share(&self, city: CityId) -> f32 {
        let Some(&class) = self.class_of.get(&city) else {
            return 0.0;
        };
        self.labels[class] as f32 / self.labels.iter().sum::<usize>().max(1) as f32
    }

    /// The `count` cities the head finds likeliest for a post, best first.
    pub fn top_cities(&self, scores: &HeadScores, count: usize) -> Vec<CityId> {
        let mut ranked: Vec<usize> = (0..self.classes.len()).collect();
        ranked.sort_by(|&a, &b| scores.log_probs[b].total_cmp(&scores.log_probs[a]));
        ranked
            .into_iter()
            .take(count)
            .map(|c| self.classes[c])
            .collect()
    }

    /// Cities the head was fitted on.
    pub fn cities(&self) -> usize {
        self.classes.len()
    }

    /// Labelled posts it was fitted on.
    pub fn posts(&self) -> usize {
        self.labels.iter().sum()
    }

    /// Words and bigrams it reads.
    pub fn features(&self) -> usize {
        self.vocabulary.len()
    }
}

/// A post's head scores (see [`LabelHead::log_probabilities`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadScores {
    log_probs: Vec<f32>,
}

fn softmax_in_place(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    values.iter_mut().for_each(|v| *v /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_sklearns_default_pattern() {
        assert_eq!(
            words("Go #Hawkeyes! I-80 at Kinnick, a b c"),
            ["go", "hawkeyes", "80", "at", "kinnick"]
        );
        assert_eq!(terms("Pike Place", false), ["pike place", "pike", "place"]);
        let grams = terms("Go #SoCo", true);
        assert!(grams.contains(&"|<so".to_string()) && grams.contains(&"|soco>".to_string()));
        assert!(
            grams.contains(&"|<go>".to_string()),
            "a short word is one gram of its own"
        );
    }

    fn example<'a>(city: CityId, text: &'a str, embedding: &'a [f32]) -> LabelledExample<'a> {
        LabelledExample {
            city,
            text,
            embedding,
        }
    }

    #[test]
    fn the_head_learns_local_words_and_trusts_cities_with_more_labels() {
        let flat = [0.0f32, 0.0];
        let mut examples = Vec::new();
        for _ in 0..10 {
            examples.push(example(1, "hawkeyes game at kinnick tonight", &flat));
            examples.push(example(2, "cubs game at wrigley tonight", &flat));
        }
        examples.push(example(3, "cubs fans at the lake", &flat));
        examples.push(example(3, "lake day at the lake", &flat));
        let config = HeadConfig::default();
        let head = LabelHead::fit(&examples, &config).expect("three cities");
        assert_eq!((head.cities(), head.posts()), (3, 22));
        let scores = head.log_probabilities("Kinnick was loud", &flat);
        assert_eq!(head.top_cities(&scores, 1), [1]);
        let bonus = |city| head.bonus(&scores, city, config.weight, config.shrink);
        assert!(bonus(1) > 0.0 && bonus(2) < 0.0);
        assert_eq!(bonus(99), 0.0, "a city without labels");
        let wrigley = head.log_probabilities("wrigley", &flat);
        assert_eq!(head.top_cities(&wrigley, 1), [2]);
        // Same evidence for both: "lake" names city 3 only, "cubs" names 2 more than 3. The city with 10
        // labels is trusted more per unit of log-odds than the one with 2.
        let trust = |n: f32| n / (n + config.shrink);
        assert!(trust(10.0) > trust(2.0));

        // Refitting on more labels moves the answer: once city 3 has posts about kinnick, they count.
        for _ in 0..30 {
            examples.push(example(3, "kinnick kinnick kinnick", &flat));
        }
        let refit = LabelHead::fit(&examples, &config).unwrap();
        let again = refit.log_probabilities("Kinnick was loud", &flat);
        assert_eq!(refit.top_cities(&again, 1), [3]);
    }

    #[test]
    fn the_label_count_prior_is_what_a_post_without_evidence_gets() {
        let flat = [0.0f32];
        let mut examples: Vec<LabelledExample> = (0..30)
            .map(|_| example(1, "big city post", &flat))
            .collect();
        examples.extend((0..10).map(|_| example(2, "small town post", &flat)));
        let config = HeadConfig::default();
        let head = LabelHead::fit(&examples, &config).unwrap();
        let prior = |city| head.prior_bonus(city, config.weight, config.shrink);
        assert!(
            prior(1) > 0.0 && prior(2) < 0.0,
            "{} {}",
            prior(1),
            prior(2)
        );
        assert_eq!((prior(99), head.label_share(99)), (0.0, 0.0));
        assert!((head.label_share(1) - 0.75).abs() < 1e-6);
        // A post of words the head never saw scores its cities by their label counts: the prior is the
        // order of what the head says of it, and the same order as its bonus.
        let nothing = head.log_probabilities("unseen words", &flat);
        let bonus = |city| head.bonus(&nothing, city, config.weight, config.shrink);
        assert!(bonus(1) > bonus(2));
        // What the prior stands for: over the posts it was fitted on, the head's probabilities average to
        // the label shares.
        let mean_share = |city: CityId| {
            let class = head.class_of[&city];
            examples
                .iter()
                .map(|e| head.log_probabilities(e.text, e.embedding).log_probs[class].exp())
                .sum::<f32>()
                / examples.len() as f32
        };
        assert!((mean_share(1) - 0.75).abs() < 0.05, "{}", mean_share(1));
        let balanced: Vec<LabelledExample> = (0..10)
            .flat_map(|_| [example(1, "a", &flat), example(2, "b", &flat)])
            .collect();
        let head = LabelHead::fit(&balanced, &config).unwrap();
        assert_eq!(head.prior_bonus(1, config.weight, config.shrink), 0.0);
    }

    #[test]
    fn the_embedding_view_separates_cities_the_words_cannot() {
        let north = [1.0f32, 0.0];
        let south = [0.0f32, 1.0];
        let examples: Vec<LabelledExample> = (0..20)
            .flat_map(|_| {
                [
                    example(1, "nice day", &north),
                    example(2, "nice day", &south),
                ]
            })
            .collect();
        let head = LabelHead::fit(&examples, &HeadConfig::default()).unwrap();
        let scores = head.log_probabilities("nice day", &[0.9, 0.1]);
        assert_eq!(head.top_cities(&scores, 2), [1, 2]);
    }

    #[test]
    fn no_head_without_two_cities_or_when_switched_off() {
        let e = [1.0f32];
        let one_city = [example(1, "a post", &e), example(1, "another", &e)];
        assert!(LabelHead::fit(&one_city, &HeadConfig::default()).is_none());
        let two = [example(1, "a post", &e), example(2, "another", &e)];
        let off = HeadConfig {
            weight: 0.0,
            ..HeadConfig::default()
        };
        assert!(LabelHead::fit(&two, &off).is_none());
        assert!(LabelHead::fit(&two, &HeadConfig::default()).is_some());
    }
}
