//! The query path: the one place that knows both the model and the index.
//!
//! ```text
//! texts --post encoder--> unit vectors --HNSW--> n nearest prompt/support vectors (tagged with their city)
//!       --aggregate per city--> top-k shortlist --TLM rerank (trained head only)--> ranked answers
//! ```
//!
//! - [`retrieve`]: the HNSW neighbours propose cities; each city is then scored exactly against its own
//!   vectors: `prompt_weight * prompt similarity + (1 - prompt_weight) * best support similarity`, or the
//!   prompt similarity alone for a city without support posts (the zero-shot gazetteer). A post's profile
//!   location, when given, proposes cities too and adds `profile_weight * cosine(profile, prompt)`; a place
//!   the post names ([`crate::geo::mentions`]) proposes the stored city nearest to it and adds
//!   `mention_weight * strength`. The population prior, when on, adds `population_prior * ln(1 + pop)`.
//! - [`rerank`]: when the model's TLM head was trained, the final score of a shortlisted city is the head's
//!   logit plus the retrieval score divided by the contrastive temperature `tau`; otherwise it is the
//!   retrieval score divided by `tau`, which keeps the retrieval order. Probabilities are the softmax of the
//!   final scores over the shortlist.
//! - [`answer`]: ranks the shortlist, answers neighbourhood-like gazetteer entries as their city
//!   (`collapse_km`), and withholds the `city` label below `min_confidence`.
//! - [`author`]: one answer for an author from all of their posts.
//! - [`build`]: writes a complete store (cities, support posts, their vectors, the graph dump) for a model.
//! - [`snapshot`]: one immutable generation (model + index + city cache). The [`Engine`] holds it behind an
//!   `Arc` and swaps it atomically on reload; running queries finish on the generation they started with.

pub mod answer;
pub mod author;
pub mod build;
pub mod error;
pub mod generations;
pub mod label_head;
pub mod live;
pub mod open;
pub mod rerank;
pub mod retrieve;
pub mod snapshot;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use contrastgeo_index::{dot, IndexOptions, LexicalHit, PostId, SupportPost};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use answer::{Answer, Calibration, Candidate, Evidence, MatchedBy};
pub use author::{AuthorAnswer, AuthorRule, WeighingPost};
pub use build::{build_index, BuildProgress, BuildReport, BuildStage};
pub use error::{EngineError, Result};
pub use generations::{GenerationId, GenerationManifest, Generations};
pub use live::{
    apply_labels, open_generation_dir, BoxedError, GateReport, GenerationInfo, IngestReport,
    LiveStore, RetrainOptions, RetrainProgress, RetrainReport, StorePublisher,
};
pub use open::{open_store, store_or_default, OpenError, OpenOptions, OpenedStore};
pub use snapshot::{CityCache, CityEntry, Snapshot};

use crate::geo::mentions::PlaceNames;
use crate::geo::City;
use crate::model::pooling::to_rows;
use crate::model::tokenize::length_buckets;
use crate::model::{ForwardMode, GeoModel, ModelError};
use label_head::{HeadScores, LabelHead};
use retrieve::{CityScore, MentionedCity, PostEvidence, ProfileEvidence};

/// Default weight of the population prior (see [`EngineConfig::population_prior`]) on a store of labelled
/// cities: off. Measured on the benchmark (README, "Place names in posts"), a prior of 0.02 raises Acc@1
/// (more posts come from bigger cities) but moves the small cities' posts to big cities far away: macro
/// Acc@161km and the mean error get worse. A store's support posts carry the evidence.
pub const DEFAULT_POPULATION_PRIOR: f32 = 0.0;

/// Default weight of a post's profile location (see [`EngineConfig::profile_weight`]), measured on the
/// benchmark's posts that carry one (README, "Profile location").
pub const DEFAULT_PROFILE_WEIGHT: f32 = 0.5;

/// Default weight of a place name written in a post (see [`EngineConfig::mention_weight`]), measured on the
/// benchmark (README, "Place names in posts").
pub const DEFAULT_MENTION_WEIGHT: f32 = 0.1;

/// The weight of place names on the zero-shot world default store (README, "Place knowledge base"): its
/// prompts carry no local evidence, so a landmark, airport or neighbourhood the post names must be able to
/// outweigh the population prior. Chosen on the fitting halves of the benchmark's test posts and of the
/// landmark posts (`examples/landmarks`).
pub const WORLD_MENTION_WEIGHT: f32 = 0.3;

/// How far a named place may lie from a stored city and still point at it: a suburb or neighbourhood of a
/// metro area ("Round Rock" for Austin, "Evanston" for Chicago).
pub const MENTION_KM: f64 = 50.0;

/// Default collapse radius (see [`EngineConfig::collapse_km`]).
pub const DEFAULT_COLLAPSE_KM: f32 = 10.0;

/// The population prior of the zero-shot world default store, tuned on the benchmark's test posts
/// against the whole gazetteer (README, "World default").
pub const WORLD_POPULATION_PRIOR: f32 = 0.03;

/// The abstain threshold of the zero-shot world default store (README, "Calibrated confidence"), on its
/// calibrated probability (the chance of being within 161 km): the lowest threshold whose answers on the
/// fitting half of the benchmark's test posts are within 161 km at least 70% of the time (`tools/calibrate.py
/// check`); on the other half it answers 41.1% of the posts, 72.7% of them within 161 km.
pub const WORLD_MIN_CONFIDENCE: f32 = 0.12;

/// The calibration of the zero-shot world default store (README, "Calibrated confidence"): Platt scaling
/// fitted on half of the benchmark's test posts (text only) so that an answer's probability is its chance of
/// being within 161 km, on the answers not named by a known place (those have
/// [`WORLD_KNOWN_PLACE_CALIBRATION`]); expected calibration error on the other half 0.259 -> 0.032 with both.
pub const WORLD_CALIBRATION: answer::Calibration = answer::Calibration {
    slope: 0.5,
    intercept: -2.45,
};

/// The calibration of the world store's answers named by a known place of the knowledge base (see
/// [`EngineConfig::known_place_calibration`]), fitted by `tools/calibrate.py fit` on the same half as
/// [`WORLD_CALIBRATION`] (895 such answers): their calibration error on the other half is 0.231 with the
/// general pair and 0.028 with this one.
pub const WORLD_KNOWN_PLACE_CALIBRATION: answer::Calibration = answer::Calibration {
    slope: 0.55,
    intercept: -0.85,
};

/// The HNSW search list of the zero-shot world default store: its 34,006 prompts ("a post of location X")
/// lie close together, so the graph search is a tenth of a bulk run's CPU. On 2,000 benchmark posts, 64
/// answers as well as 128 and 1,024 (Acc@1 0.374 / 0.373 / 0.370) and gives the same answered city as
/// 1,024 for 97.6% of the posts either answers (128: 98.1%); the posts where they differ are near-ties.
pub const WORLD_EF_SEARCH: usize = 64;

/// Default number of lexical matches per post (see [`EngineConfig::lexical_hits`]).
pub const DEFAULT_LEXICAL_HITS: usize = 32;

/// Default weight of the lexical vote (see [`EngineConfig::lexical_weight`]), measured on the benchmark
/// (README, "Learning from every label").
pub const DEFAULT_LEXICAL_WEIGHT: f32 = 0.1;

/// Default weight of the dense vote (see [`EngineConfig::vote_weight`]), measured like the lexical one.
pub const DEFAULT_VOTE_WEIGHT: f32 = 0.1;

/// Settings of the query path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// Nearest stored vectors fetched from HNSW per post; their cities are the candidates.
    pub neighbours: usize,
    /// Cities in an answer's shortlist (and reranked by the TLM head).
    pub top_k: usize,
    /// Weight of the prompt similarity against the best support similarity, in `[0, 1]`.
    pub prompt_weight: f32,
    /// HNSW search list size (`ef`); raised to `neighbours` when smaller.
    pub ef_search: usize,
    /// Most (post, city) pairs per TLM head pass; also sets how many posts share one rerank group.
    pub rerank_batch: usize,
    /// Support posts of the answered city returned as evidence.
    pub evidence: usize,
    /// Weight of the population prior: `population_prior * ln(1 + population)` is added to a city's
    /// retrieval score (cosine scale) before ranking, so that among cities the post fits about equally
    /// well the larger one wins (a post is likelier to come from a city of millions than from its
    /// namesake village). 0 switches it off.
    pub population_prior: f32,
    /// Weight of a post's profile location (the author's free-text "where I am", when the post carries one):
    /// `profile_weight * cosine(profile, city prompt)` is added to each candidate's retrieval score, and the
    /// cities the profile resembles join the candidates. 0 ignores profiles.
    pub profile_weight: f32,
    /// Weight of the place names a post writes ("Brooklyn", "Round Rock"): each stored city within
    /// [`MENTION_KM`] of a named place joins the candidates and gains `mention_weight * strength` (strength
    /// in (0, 1]: the named place's share of its namesakes' population). Names come from the stored cities
    /// and, when the data home has it, the whole gazetteer. 0 ignores place names.
    pub mention_weight: f32,
    /// A gazetteer entry without support posts within this many km of a city at least 5 times as populous
    /// is answered as that city (neighbourhoods and suburbs: "Chicago Loop" is answered as Chicago). 0 keeps
    /// every entry apart.
    pub collapse_km: f32,
    /// Below this confidence (the answer's probability over its shortlist) the answer's `city` is `null`:
    /// the engine abstains, still showing its best guess and shortlist. 0 always answers.
    pub min_confidence: f32,
    /// Maps the answer's probability to its chance of being within 161 km ([`answer::Calibration`]); the
    /// identity by default, [`WORLD_CALIBRATION`] on the zero-shot world store.
    pub calibration: answer::Calibration,
    /// The calibration of answers whose city the post names by a known place of the knowledge base (a
    /// landmark, team, airport...: [`Candidate::mention_known_place`]), which are right far more often than
    /// answers at the same shortlist probability without one; `None` uses `calibration` for every answer
    /// (the default), [`WORLD_KNOWN_PLACE_CALIBRATION`] on the zero-shot world store.
    pub known_place_calibration: Option<answer::Calibration>,
    /// Support posts fetched from the lexical (BM25) index per post; their cities join the candidates.
    /// 0 switches the lexical side off.
    pub lexical_hits: usize,
    /// Weight of the lexical vote: a candidate gains `lexical_weight * share`, its share of the BM25 score
    /// of the post's `lexical_hits` matches (every matching support post votes, so a city with many posts
    /// using the post's words gains more than one with a single match).
    pub lexical_weight: f32,
    /// Weight of the dense vote: a candidate gains `vote_weight * share`, its share of the similarity mass
    /// (`exp(cosine / 0.05)`) of the support posts among the post's `neighbours` nearest vectors.
    pub vote_weight: f32,
    /// The label head fitted on the store's labelled posts (see [`label_head`]).
    pub head: label_head::HeadConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            neighbours: 64,
            top_k: 10,
            prompt_weight: 0.9,
            ef_search: 128,
            rerank_batch: 320,
            evidence: 3,
            population_prior: DEFAULT_POPULATION_PRIOR,
            profile_weight: DEFAULT_PROFILE_WEIGHT,
            mention_weight: DEFAULT_MENTION_WEIGHT,
            collapse_km: DEFAULT_COLLAPSE_KM,
            min_confidence: 0.0,
            calibration: answer::Calibration::IDENTITY,
            known_place_calibration: None,
            lexical_hits: DEFAULT_LEXICAL_HITS,
            lexical_weight: DEFAULT_LEXICAL_WEIGHT,
            vote_weight: DEFAULT_VOTE_WEIGHT,
            head: label_head::HeadConfig::default(),
        }
    }
}

impl EngineConfig {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(EngineError::InvalidConfig(what));
        if self.neighbours == 0 || self.top_k == 0 || self.rerank_batch == 0 {
            return bad(format!(
                "neighbours ({}), top_k ({}) and rerank_batch ({}) must be at least 1",
                self.neighbours, self.top_k, self.rerank_batch
            ));
        }
        for (name, value) in [
            ("collapse_km", self.collapse_km),
            ("profile_weight", self.profile_weight),
            ("mention_weight", self.mention_weight),
            ("population_prior", self.population_prior),
            ("lexical_weight", self.lexical_weight),
            ("vote_weight", self.vote_weight),
            ("head.weight", self.head.weight),
            ("head.shrink", self.head.shrink),
            ("head.l2", self.head.l2),
            ("head.learning_rate", self.head.learning_rate),
            ("head.embedding_scale", self.head.embedding_scale),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return bad(format!("{name} must be a finite number >= 0, got {value}"));
            }
        }
        for (name, calibration) in std::iter::once(("calibration", self.calibration)).chain(
            self.known_place_calibration
                .map(|c| ("known_place_calibration", c)),
        ) {
            let usable = calibration.slope.is_finite()
                && calibration.slope > 0.0
                && calibration.intercept.is_finite();
            if !usable {
                return Err(EngineError::InvalidConfig(format!(
                    "{name} needs a positive slope and a finite intercept, got {calibration:?}"
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return bad(format!(
                "min_confidence must be within [0, 1], got {}",
                self.min_confidence
            ));
        }
        if !(0.0..=1.0).contains(&self.prompt_weight) {
            return bad(format!(
                "prompt_weight must be within [0, 1], got {}",
                self.prompt_weight
            ));
        }
        Ok(())
    }

    /// The HNSW parameters for stores built and opened with this configuration.
    pub fn index_options(&self) -> IndexOptions {
        IndexOptions {
            ef_search: self.ef_search.max(self.neighbours),
            ..IndexOptions::default()
        }
    }
}

/// Answers "where was this written?" from the current [`Snapshot`].
pub struct Engine {
    config: EngineConfig,
    snapshot: RwLock<Arc<Snapshot>>,
    /// The gazetteer's place names (beyond the stored cities' own), when mentions count and the data home
    /// has the gazetteer.
    gazetteer_names: Option<Arc<PlaceNames>>,
}

impl Engine {
    /// Opens the store in `dir` for queries by `model` (see [`Snapshot::open`] for what is refused).
    pub fn open(dir: &Path, model: Arc<GeoModel>, config: EngineConfig) -> Result<Self> {
        config.validate()?;
        let snapshot = Snapshot::open(dir, model, &config)?;
        Ok(Self::with_snapshot(snapshot, config))
    }

    /// An engine over an opened snapshot.
    pub fn with_snapshot(snapshot: Snapshot, config: EngineConfig) -> Self {
        Self::with_shared(Arc::new(snapshot), config)
    }

    /// An engine over a snapshot that others hold too (e.g. the live generation, for a comparison).
    pub fn with_shared(snapshot: Arc<Snapshot>, config: EngineConfig) -> Self {
        let gazetteer_names = (config.mention_weight > 0.0)
            .then(crate::geo::mentions::gazetteer_names)
            .flatten();
        Self {
            config,
            snapshot: RwLock::new(snapshot),
            gazetteer_names,
        }
    }

    /// Builds a complete store for `model` in `dir`; see [`build::build_index`].
    pub fn build_index(
        dir: &Path,
        model: &GeoModel,
        cities: &[City],
        support: &[SupportPost],
        config: &EngineConfig,
        progress: &dyn Fn(BuildProgress),
    ) -> Result<BuildReport> {
        build_index(
            dir,
            model,
            cities,
            support,
            config.index_options(),
            progress,
        )
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The current generation.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Makes `snapshot` the generation new queries use and returns the previous one (queries already
    /// running finish on it; it closes when the last of them drops it).
    pub fn swap(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let mut current = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, Arc::new(snapshot))
    }

    /// Where each of `texts` was most likely written, in input order. Empty texts are refused
    /// ([`ModelError::EmptyText`] names the first).
    pub fn locate(&self, texts: &[&str]) -> Result<Vec<Answer>> {
        let posts: Vec<PostQuery> = texts.iter().map(|&text| PostQuery::text(text)).collect();
        self.locate_posts(&posts)
    }

    /// [`Engine::locate`] for posts that may carry their author's profile location: when one does, the
    /// cities its profile resembles join the post's candidates and every candidate's score gains
    /// `profile_weight * cosine(profile, city prompt)` (see [`EngineConfig::profile_weight`]).
    pub fn locate_posts(&self, posts: &[PostQuery]) -> Result<Vec<Answer>> {
        check_texts(posts)?;
        if posts.is_empty() {
            return Ok(Vec::new());
        }
        let snapshot = self.snapshot();
        Ok(self
            .locate_in(&self.view(&snapshot), posts)?
            .into_iter()
            .map(|located| located.answer)
            .collect())
    }

    /// [`Engine::locate_posts`] for posts whose unit vectors the caller already has from this engine's post
    /// encoder (a pipeline that embedded them once; an evaluation trying several settings on the same
    /// posts). With a trained TLM head, whose rerank reads the encoder's token states, the posts are
    /// encoded again and `vectors` serve only to check the count.
    pub fn locate_embedded(
        &self,
        posts: &[PostQuery],
        vectors: Vec<Vec<f32>>,
    ) -> Result<Vec<Answer>> {
        if posts.len() != vectors.len() {
            return Err(EngineError::VectorCount {
                posts: posts.len(),
                vectors: vectors.len(),
            });
        }
        check_texts(posts)?;
        let snapshot = self.snapshot();
        let view = self.view(&snapshot);
        let signals = self.signals(&view, posts)?;
        let located = if snapshot.model().config().head_trained {
            self.locate_reranked(&view, posts, signals)?
        } else {
            self.locate_retrieved(&view, posts, signals, Some(vectors))?
        };
        Ok(located.into_iter().map(|l| l.answer).collect())
    }

    fn locate_in(&self, view: &View, posts: &[PostQuery]) -> Result<Vec<Located>> {
        let signals = self.signals(view, posts)?;
        if view.snapshot.model().config().head_trained {
            self.locate_reranked(view, posts, signals)
        } else {
            self.locate_retrieved(view, posts, signals, None)
        }
    }

    /// What each post says besides its vector: profile, place names, lexical matches.
    fn signals(&self, view: &View, posts: &[PostQuery]) -> Result<Vec<PostSignals>> {
        let signals: Vec<PostSignals> = self
            .profile_vectors(view, posts)?
            .into_iter()
            .zip(posts)
            .map(|(profile, post)| {
                Ok(PostSignals {
                    profile,
                    mentions: self.mentioned_cities(view, post.text),
                    lexical: self.lexical_hits(view, post.text)?,
                    head_scores: None,
                })
            })
            .collect::<Result<_>>()?;
        Ok(signals)
    }

    /// The support posts that share the words of `text` (none when the lexical side is off or the store
    /// has no support posts).
    fn lexical_hits(&self, view: &View, text: &str) -> Result<Vec<LexicalHit>> {
        let lexical = view.snapshot.lexical();
        if self.config.lexical_hits == 0 || lexical.is_empty() {
            return Ok(Vec::new());
        }
        Ok(lexical.search(text, self.config.lexical_hits)?)
    }

    /// What one call reads of `snapshot` (the label head only when it has a weight).
    fn view<'a>(&self, snapshot: &'a Snapshot) -> View<'a> {
        View::of(snapshot, self.config.head.weight > 0.0)
    }

    /// The stored cities the place names in `text` point at (see [`EngineConfig::mention_weight`]).
    fn mentioned_cities(&self, view: &View, text: &str) -> Vec<MentionedCity> {
        if self.config.mention_weight <= 0.0 {
            return Vec::new();
        }
        // (written name, city) -> the largest share of that name's places pointing at the city. The same
        // name found in both tables counts once. A store of gazetteer cities has no names of its own: its
        // empty table is not scanned.
        let mut by_name: HashMap<(String, crate::geo::CityId), (f32, bool)> = HashMap::new();
        let tables = std::iter::once(view.cities.place_names(self.gazetteer_names.as_deref()))
            .chain(self.gazetteer_names.as_deref())
            .filter(|table| !table.is_empty());
        let tokenizer = view.snapshot.model().post_encoder().tokenizer();
        let is_common_word = |word: &str| tokenizer.is_vocabulary_word(word);
        for table in tables {
            for mention in table.find(text, &is_common_word) {
                for place in mention.places {
                    let Some((city, _)) =
                        view.cities.nearest_within(place.lat, place.lon, MENTION_KM)
                    else {
                        continue;
                    };
                    let (share, known) = by_name
                        .entry((mention.written.clone(), city))
                        .or_insert((0.0, false));
                    *share = share.max(place.share);
                    *known |= place.known;
                }
            }
        }
        // Per city: the summed strength, and the name shown, the strongest one (ties to the first in
        // alphabetical order, so that the same post always shows the same name).
        let mut by_city: HashMap<crate::geo::CityId, (MentionedCity, f32)> = HashMap::new();
        for ((written, city), (share, known)) in by_name {
            let (entry, shown_share) = by_city.entry(city).or_insert_with(|| {
                let first = MentionedCity {
                    city,
                    written: written.clone(),
                    strength: 0.0,
                    known_place: false,
                };
                (first, share)
            });
            if share > *shown_share || (share == *shown_share && written < entry.written) {
                entry.written = written;
                *shown_share = share;
            }
            entry.strength = (entry.strength + share).min(1.0);
            entry.known_place |= known;
        }
        let mut cities: Vec<MentionedCity> = by_city.into_values().map(|(m, _)| m).collect();
        cities.sort_by_key(|m| m.city);
        cities
    }

    /// The unit vector of each post's profile location (the location encoder's, the same space as the
    /// prompts), each distinct profile encoded once; `None` for a post without one or with the profile
    /// weight at 0.
    fn profile_vectors(&self, view: &View, posts: &[PostQuery]) -> Result<Vec<Option<Vec<f32>>>> {
        let profile_of = |p: &PostQuery<'_>| {
            p.profile
                .map(str::trim)
                .filter(|l| !l.is_empty() && self.config.profile_weight > 0.0)
                .map(str::to_owned)
        };
        let mut distinct: Vec<String> = posts.iter().filter_map(profile_of).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.is_empty() {
            return Ok(vec![None; posts.len()]);
        }
        let refs: Vec<&str> = distinct.iter().map(String::as_str).collect();
        let vectors = view.snapshot.model().location_encoder().embed(&refs)?;
        Ok(posts
            .iter()
            .map(|p| {
                let profile = profile_of(p)?;
                let at = distinct.binary_search(&profile).ok()?;
                Some(vectors[at].clone())
            })
            .collect())
    }

    /// Where each author most likely writes from: every group of `authors` is one author's posts, and gets
    /// one answer from all of them (see [`author`] for the rule). Empty posts are refused like in
    /// [`Engine::locate`] (the index counts posts across all groups, in order); an empty group is refused.
    pub fn locate_authors(
        &self,
        authors: &[Vec<PostQuery>],
        rule: AuthorRule,
    ) -> Result<Vec<AuthorAnswer>> {
        if let Some(index) = authors.iter().position(Vec::is_empty) {
            return Err(EngineError::EmptyAuthor { index });
        }
        let posts: Vec<PostQuery> = authors.iter().flatten().copied().collect();
        check_texts(&posts)?;
        if posts.is_empty() {
            return Ok(Vec::new());
        }
        let snapshot = self.snapshot();
        let view = self.view(&snapshot);
        let mut located = self.locate_in(&view, &posts)?.into_iter();
        let scoring = author::Scoring {
            cities: &view.cities,
            prompt_weight: self.config.prompt_weight,
            population_prior: self.config.population_prior,
            weights: EvidenceWeights::from(&self.config),
            head: view.head.as_deref(),
            min_confidence: self.config.min_confidence,
            calibration: self.config.calibration,
            tau: snapshot.model().config().tau as f32,
            top_k: self.config.top_k,
        };
        authors
            .iter()
            .enumerate()
            .map(|(index, own)| {
                let own: Vec<Located> = located.by_ref().take(own.len()).collect();
                author::aggregate(&own, &scoring, rule).ok_or(EngineError::NoCandidates { index })
            })
            .collect()
    }

    /// Retrieval only: the shortlist in retrieval order.
    fn locate_retrieved(
        &self,
        view: &View,
        posts: &[PostQuery],
        signals: Vec<PostSignals>,
        vectors: Option<Vec<Vec<f32>>>,
    ) -> Result<Vec<Located>> {
        let texts: Vec<&str> = posts.iter().map(|p| p.text).collect();
        let queries = match vectors {
            Some(vectors) => vectors,
            None => view.snapshot.model().post_encoder().embed(&texts)?,
        };
        let snapshot = view.snapshot;
        let tau = snapshot.model().config().tau as f32;
        queries
            .into_par_iter()
            .zip(signals)
            .enumerate()
            .map(|(index, (query, mut signals))| {
                signals.head_scores = view.head_scores(texts[index], &query);
                let shortlist = self.shortlist(view, &query, &signals)?;
                let candidates = candidates(&view.cities, &shortlist, |scored, _| {
                    (scored.ranking() / tau, None)
                });
                Ok(Located {
                    answer: self.answer(view, index, &query, candidates, &signals.lexical)?,
                    query,
                    signals,
                })
            })
            .collect()
    }

    /// Retrieval, then the TLM head over each shortlist. Posts go in groups of similar length, each encoded
    /// once for both retrieval and the head; groups run in parallel.
    fn locate_reranked(
        &self,
        view: &View,
        posts: &[PostQuery],
        signals: Vec<PostSignals>,
    ) -> Result<Vec<Located>> {
        let texts: Vec<&str> = posts.iter().map(|p| p.text).collect();
        let model = view.snapshot.model();
        let encoder = model.post_encoder();
        let tau = model.config().tau as f32;
        let tokenized = encoder.tokenizer().tokenize(&texts)?;
        let lengths: Vec<usize> = tokenized.iter().map(Vec::len).collect();
        let posts_per_group = (self.config.rerank_batch / self.config.top_k).max(1);
        let groups = length_buckets(
            &lengths,
            posts_per_group,
            encoder.settings().max_batch_tokens,
        );
        let answered: Vec<(Vec<usize>, Vec<Located>)> = groups
            .into_par_iter()
            .map(|group| {
                let ids: Vec<&[u32]> = group.iter().map(|&i| tokenized[i].as_slice()).collect();
                let batch = encoder.tokenizer().batch(&ids, encoder.device())?;
                let encoded = encoder.encode_batch(&batch, ForwardMode::Inference)?;
                let queries = to_rows(&encoded.pooled).map_err(ModelError::from)?;
                let group_signals: Vec<PostSignals> = queries
                    .iter()
                    .zip(&group)
                    .map(|(query, &index)| PostSignals {
                        head_scores: view.head_scores(texts[index], query),
                        ..signals[index].clone()
                    })
                    .collect();
                let shortlists = queries
                    .iter()
                    .zip(&group_signals)
                    .map(|(query, signals)| self.shortlist(view, query, signals))
                    .collect::<Result<Vec<_>>>()?;
                let logits = rerank::tlm_logits(
                    model,
                    &encoded,
                    &shortlists,
                    &view.cities,
                    self.config.rerank_batch,
                )?;
                let answers = group
                    .iter()
                    .zip(queries)
                    .zip(group_signals)
                    .zip(shortlists.iter().zip(&logits))
                    .map(|(((&index, query), signals), (shortlist, logits))| {
                        let candidates = candidates(&view.cities, shortlist, |scored, position| {
                            let logit = logits[position];
                            (logit + scored.ranking() / tau, Some(logit))
                        });
                        Ok(Located {
                            answer: self.answer(
                                view,
                                index,
                                &query,
                                candidates,
                                &signals.lexical,
                            )?,
                            query,
                            signals,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((group, answers))
            })
            .collect::<Result<_>>()?;
        let mut ordered: Vec<Option<Located>> = vec![None; texts.len()];
        for (group, answers) in answered {
            for (index, answer) in group.into_iter().zip(answers) {
                ordered[index] = Some(answer);
            }
        }
        ordered
            .into_iter()
            .enumerate()
            .map(|(index, answer)| answer.ok_or(EngineError::NoCandidates { index }))
            .collect()
    }

    fn shortlist(
        &self,
        view: &View,
        query: &[f32],
        signals: &PostSignals,
    ) -> Result<Vec<CityScore>> {
        retrieve::retrieve(
            view.snapshot.index(),
            &view.cities,
            query,
            signals.evidence(&self.config, view.head.as_deref()),
            &self.config,
        )
    }

    /// Ranks the candidates and attaches the answered city's support posts nearest to the post and, after
    /// them, those that share its words best (`lexical`: the post's lexical matches).
    fn answer(
        &self,
        view: &View,
        index: usize,
        query: &[f32],
        mut candidates: Vec<Candidate>,
        lexical: &[LexicalHit],
    ) -> Result<Answer> {
        answer::rank(&mut candidates);
        answer::collapse(&mut candidates, &view.cities, self.config.collapse_km);
        let mut evidence = Vec::new();
        if let Some(entry) = candidates
            .first()
            .and_then(|best| view.cities.get(best.city_id))
        {
            let bm25_of = |post: PostId| {
                lexical
                    .iter()
                    .find(|hit| hit.post == post && hit.city == entry.city.id)
                    .map(|hit| hit.score)
            };
            let nearest: Vec<(PostId, f32)> =
                retrieve::best_supports(query, entry, self.config.evidence);
            let by_words = lexical
                .iter()
                .filter(|hit| hit.city == entry.city.id)
                .filter(|hit| !nearest.iter().any(|(post, _)| *post == hit.post))
                .filter_map(|hit| {
                    let vector = entry.supports.iter().find(|s| s.post == hit.post)?;
                    Some((hit.post, dot(query, &vector.vector)))
                })
                .take(self.config.evidence);
            for (post_id, similarity) in nearest.iter().copied().chain(by_words) {
                let near = nearest.iter().any(|(post, _)| *post == post_id);
                let bm25 = bm25_of(post_id);
                let matched_by = match (near, bm25.is_some()) {
                    (true, true) => MatchedBy::Both,
                    (true, false) => MatchedBy::Vector,
                    (false, _) => MatchedBy::Words,
                };
                if let Some(post) = view.snapshot.index().store().support_post(post_id)? {
                    evidence.push(Evidence {
                        post_id,
                        text: post.text,
                        source: post.source,
                        similarity,
                        matched_by,
                        bm25,
                    });
                }
            }
        }
        Answer::from_ranked(candidates, evidence)
            .map(|a| {
                a.calibrated(self.config.calibration, self.config.known_place_calibration)
                    .abstain_below(self.config.min_confidence)
            })
            .ok_or(EngineError::NoCandidates { index })
    }
}

/// A post to locate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostQuery<'a> {
    /// What the post says.
    pub text: &'a str,
    /// Its author's free-text profile location, when known.
    pub profile: Option<&'a str>,
}

impl<'a> PostQuery<'a> {
    /// A post known by its text alone.
    pub fn text(text: &'a str) -> Self {
        Self {
            text,
            profile: None,
        }
    }
}

/// Refuses the first post with an empty text.
fn check_texts(posts: &[PostQuery]) -> Result<()> {
    match posts.iter().position(|p| p.text.trim().is_empty()) {
        Some(index) => Err(ModelError::EmptyText { index }.into()),
        None => Ok(()),
    }
}

/// What a post says besides its text's vector.
#[derive(Debug, Clone, Default)]
pub(crate) struct PostSignals {
    /// Its profile location's unit vector, when it had one (and profiles count).
    profile: Option<Vec<f32>>,
    /// The stored cities its place names point at.
    mentions: Vec<MentionedCity>,
    /// The support posts that share its words.
    lexical: Vec<LexicalHit>,
    /// The label head's scores of it, when the store has a head.
    head_scores: Option<HeadScores>,
}

/// The weights of what a post says besides its vector (the engine's, or an author rule's copy).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EvidenceWeights {
    pub profile: f32,
    pub mention: f32,
    pub lexical: f32,
    pub vote: f32,
    pub head: f32,
    pub head_shrink: f32,
}

impl From<&EngineConfig> for EvidenceWeights {
    fn from(config: &EngineConfig) -> Self {
        Self {
            profile: config.profile_weight,
            mention: config.mention_weight,
            lexical: config.lexical_weight,
            vote: config.vote_weight,
            head: config.head.weight,
            head_shrink: config.head.shrink,
        }
    }
}

impl PostSignals {
    fn evidence<'a>(
        &'a self,
        weights: impl Into<EvidenceWeights>,
        head: Option<&'a LabelHead>,
    ) -> PostEvidence<'a> {
        let weights = weights.into();
        PostEvidence {
            profile: self.profile.as_deref().map(|vector| ProfileEvidence {
                vector,
                weight: weights.profile,
            }),
            mentions: &self.mentions,
            mention_weight: weights.mention,
            lexical: &self.lexical,
            lexical_weight: weights.lexical,
            vote_weight: weights.vote,
            head: head.zip(self.head_scores.as_ref()),
            head_weight: weights.head,
            head_shrink: weights.head_shrink,
        }
    }
}

/// A post's answer with the vectors it was answered from.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    answer: Answer,
    /// The post's unit query vector.
    query: Vec<f32>,
    /// Its profile and place names.
    signals: PostSignals,
}

/// What one `locate` call reads: the generation, one view of its city table and its label head.
struct View<'a> {
    snapshot: &'a Snapshot,
    cities: Arc<CityCache>,
    head: Option<Arc<LabelHead>>,
}

impl<'a> View<'a> {
    /// One view of `snapshot`'s city table and head (when `with_head`) for a whole call, even while cities
    /// are added live.
    fn of(snapshot: &'a Snapshot, with_head: bool) -> Self {
        Self {
            cities: snapshot.cities(),
            head: snapshot.head().filter(|_| with_head),
            snapshot,
        }
    }

    /// The label head's scores of a post, when there is a head.
    fn head_scores(&self, text: &str, query: &[f32]) -> Option<HeadScores> {
        self.head
            .as_ref()
            .map(|head| head.log_probabilities(text, query))
    }
}

/// Candidates for a shortlist; `score(scored, position)` gives each its final score and TLM logit.
fn candidates(
    cities: &CityCache,
    shortlist: &[CityScore],
    score: impl Fn(&CityScore, usize) -> (f32, Option<f32>),
) -> Vec<Candidate> {
    shortlist
        .iter()
        .enumerate()
        .filter_map(|(position, scored)| {
            let entry = cities.get(scored.city)?;
            let (final_score, logit) = score(scored, position);
            let mut candidate = Candidate::new(&entry.city, final_score, scored);
            candidate.tlm_logit = logit;
            Some(candidate)
        })
        .collect()
}
