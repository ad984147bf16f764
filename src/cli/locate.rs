//! `contrastgeo locate`: posts in, one predicted city per post out (JSONL with the shortlist and evidence, or
//! CSV), streamed in chunks so memory stays constant on any input size.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use super::flags;
use super::index::{open_store, GeoModelArgs};
use super::input::{keep_posts, PostsInput};
use super::open_output;
use super::progress::{bulk_progress, rate_message};
use crate::engine::label_head::HeadConfig;
use crate::engine::{Answer, AuthorAnswer, AuthorRule, EngineConfig, PostQuery, WeighingPost};
use crate::input::{InputLine, PostReader};

/// Lines read and located per round: bounds memory on any input size.
const CHUNK_LINES: usize = 1024;

/// Arguments of `contrastgeo locate`.
#[derive(Debug, clap::Args)]
pub struct LocateArgs {
    /// Store directory [default: $CONTRASTGEO_STORE, else index/default in the data home, built from the
    /// gazetteer's city prompts on first use].
    #[arg(long, env = crate::home::STORE_DIR_ENV)]
    pub store: Option<PathBuf>,
    /// Where posts come from.
    #[command(flatten)]
    pub posts: PostsInput,
    /// Output file; absent for stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// How to write answers.
    #[arg(long, value_enum, default_value_t)]
    pub output_format: OutputFormat,
    /// Only locate input lines `n` with `(n - 1) % N == I` (0-based `I/N`), to split one input across
    /// processes or machines.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Answer once per author instead of once per post: posts are grouped by their `user` field (JSONL) or
    /// column (CSV/TSV), and each author gets one answer from all of their posts. Reads the whole input
    /// first; posts without a user are reported and skipped.
    #[arg(long, value_enum)]
    pub group_by: Option<GroupBy>,
    /// How an author's posts combine with --group-by.
    #[arg(long, value_enum, default_value_t)]
    pub author_rule: AuthorRule,
    /// The model (must be the one the store was built with).
    #[command(flatten)]
    pub model: GeoModelArgs,
    /// Query settings.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Flags of the query path, defaulting to [`EngineConfig::default`].
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Nearest stored vectors fetched per post; their cities are the candidates.
    #[arg(long, env = "CONTRASTGEO_NEIGHBOURS", value_parser = flags::at_least_one, default_value_t = EngineConfig::default().neighbours)]
    pub neighbours: usize,
    /// Cities in each answer's shortlist.
    #[arg(long, env = "CONTRASTGEO_TOP_K", value_parser = flags::at_least_one, default_value_t = EngineConfig::default().top_k)]
    pub top_k: usize,
    /// Weight of the prompt similarity against the best support similarity, in [0, 1].
    #[arg(long, env = "CONTRASTGEO_PROMPT_WEIGHT", value_parser = flags::unit_interval_f32, default_value_t = EngineConfig::default().prompt_weight)]
    pub prompt_weight: f32,
    /// HNSW search list size [default: 128; 64 on the world default store].
    #[arg(long, env = "CONTRASTGEO_EF_SEARCH", value_parser = flags::at_least_one)]
    pub ef_search: Option<usize>,
    /// Most (post, city) pairs per TLM rerank pass.
    #[arg(long, value_parser = flags::at_least_one, default_value_t = EngineConfig::default().rerank_batch)]
    pub rerank_batch: usize,
    /// Support posts returned as evidence per answer.
    #[arg(long, default_value_t = EngineConfig::default().evidence)]
    pub evidence: usize,
    /// Weight of the population prior (added to a city's similarity: weight * ln(1 + population); a city of
    /// unknown population counts as the store's median) [default: 0.03 on the zero-shot world store, 0 on a
    /// store of your own].
    #[arg(long, env = "CONTRASTGEO_POPULATION_PRIOR", value_parser = flags::non_negative_f32)]
    pub population_prior: Option<f32>,
    /// Weight of a post's profile location (`user_location`), when the input carries one: added to each
    /// candidate's similarity as weight * cosine(profile, city prompt); 0 ignores profiles.
    #[arg(long, env = "CONTRASTGEO_PROFILE_WEIGHT", value_parser = flags::non_negative_f32, default_value_t = EngineConfig::default().profile_weight)]
    pub profile_weight: f32,
    /// Weight of the place names a post writes ("Brooklyn", "Round Rock", "Faneuil Hall", "LHR"): the stored
    /// cities within 50 km of a named place (gazetteer, knowledge-base and stored names) gain weight *
    /// strength; 0 ignores place names [default: 0.3 on the zero-shot world store, 0.1 on a store of your own].
    #[arg(long, env = "CONTRASTGEO_MENTION_WEIGHT", value_parser = flags::non_negative_f32)]
    pub mention_weight: Option<f32>,
    /// Answer a gazetteer neighbourhood or suburb (no support posts, within this many km of a city at least
    /// 5 times as populous) as that city; 0 keeps them apart.
    #[arg(long, env = "CONTRASTGEO_COLLAPSE_KM", value_parser = flags::non_negative_f32, default_value_t = EngineConfig::default().collapse_km)]
    pub collapse_km: f32,
    /// Abstain (`"city": null`, best guess still shown) when the answer's probability is below this, in
    /// [0, 1] [default: the world store's tuned threshold on the zero-shot world store, 0 on yours].
    #[arg(long, env = "CONTRASTGEO_MIN_CONFIDENCE", value_parser = flags::unit_interval_f32)]
    pub min_confidence: Option<f32>,
    /// Calibration of the answer's probability, `SLOPE,INTERCEPT` of Platt scaling (`1,0` leaves it as it
    /// is; `tools/calibrate.py` fits one) [default: the world store's on the zero-shot world store, `1,0` on
    /// yours].
    #[arg(long, env = "CONTRASTGEO_CALIBRATION", value_parser = flags::calibration)]
    pub calibration: Option<crate::engine::Calibration>,
    /// Calibration, `SLOPE,INTERCEPT`, of the answers whose city the post names by a known place of the
    /// knowledge base (a landmark, team, airport...) [default: the world store's on the zero-shot world store
    /// when `--calibration` is not given either; otherwise `--calibration` for every answer].
    #[arg(long, env = "CONTRASTGEO_KNOWN_PLACE_CALIBRATION", value_parser = flags::calibration)]
    pub known_place_calibration: Option<crate::engine::Calibration>,
    /// Support posts matched by their words (BM25) per post; their cities join the candidates (0: vectors
    /// only).
    #[arg(long, env = "CONTRASTGEO_LEXICAL_HITS", default_value_t = EngineConfig::default().lexical_hits)]
    pub lexical_hits: usize,
    /// Weight of the lexical vote: a city gains this x its share of the BM25 score of the post's matches.
    #[arg(long, env = "CONTRASTGEO_LEXICAL_WEIGHT", value_parser = flags::non_negative_f32, default_value_t = EngineConfig::default().lexical_weight)]
    pub lexical_weight: f32,
    /// Weight of the dense vote: a city gains this x its share of the similarity mass of the support posts
    /// among the post's nearest vectors.
    #[arg(long, env = "CONTRASTGEO_VOTE_WEIGHT", value_parser = flags::non_negative_f32, default_value_t = EngineConfig::default().vote_weight)]
    pub vote_weight: f32,
    /// Weight of the label head (the classifier fitted on the store's labels) in the ranking (0: off).
    #[arg(long, env = "CONTRASTGEO_HEAD_WEIGHT", value_parser = flags::non_negative_f32, default_value_t = HeadConfig::default().weight)]
    pub head_weight: f32,
    /// Label count at which a city's head term counts half.
    #[arg(long, value_parser = flags::non_negative_f32, default_value_t = HeadConfig::default().shrink)]
    pub head_shrink: f32,
    /// Passes over the labels when fitting the label head.
    #[arg(long, value_parser = flags::at_least_one, default_value_t = HeadConfig::default().epochs)]
    pub head_epochs: usize,
    /// L2 regularisation of the label head.
    #[arg(long, value_parser = flags::non_negative_f32, default_value_t = HeadConfig::default().l2)]
    pub head_l2: f32,
}

impl EngineArgs {
    /// The engine configuration these flags describe.
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            neighbours: self.neighbours,
            top_k: self.top_k,
            prompt_weight: self.prompt_weight,
            ef_search: self.ef_search.unwrap_or(EngineConfig::default().ef_search),
            rerank_batch: self.rerank_batch,
            evidence: self.evidence,
            population_prior: self
                .population_prior
                .unwrap_or(crate::engine::DEFAULT_POPULATION_PRIOR),
            profile_weight: self.profile_weight,
            mention_weight: self
                .mention_weight
                .unwrap_or(crate::engine::DEFAULT_MENTION_WEIGHT),
            collapse_km: self.collapse_km,
            min_confidence: self.min_confidence.unwrap_or(0.0),
            calibration: self.calibration.unwrap_or_default(),
            known_place_calibration: self.known_place_calibration,
            lexical_hits: self.lexical_hits,
            lexical_weight: self.lexical_weight,
            vote_weight: self.vote_weight,
            head: HeadConfig {
                weight: self.head_weight,
                shrink: self.head_shrink,
                epochs: self.head_epochs,
                l2: self.head_l2,
                ..HeadConfig::default()
            },
        }
    }

    /// [`EngineArgs::config`] for the store in `store`: the world default store (no store given) gets the
    /// population prior and abstain threshold tuned for it unless the flags say otherwise (its zero-shot
    /// prompts need a stronger prior than a store whose support posts carry evidence).
    pub fn config_for(&self, store: Option<&std::path::Path>) -> EngineConfig {
        let mut config = self.config();
        if store.is_none() && self.population_prior.is_none() {
            config.population_prior = crate::engine::WORLD_POPULATION_PRIOR;
        }
        if store.is_none() && self.min_confidence.is_none() {
            config.min_confidence = crate::engine::WORLD_MIN_CONFIDENCE;
        }
        if store.is_none() && self.mention_weight.is_none() {
            config.mention_weight = crate::engine::WORLD_MENTION_WEIGHT;
        }
        if store.is_none() && self.calibration.is_none() && self.known_place_calibration.is_none() {
            config.known_place_calibration = Some(crate::engine::WORLD_KNOWN_PLACE_CALIBRATION);
        }
        if store.is_none() && self.calibration.is_none() {
            config.calibration = crate::engine::WORLD_CALIBRATION;
        }
        if store.is_none() && self.ef_search.is_none() {
            config.ef_search = crate::engine::WORLD_EF_SEARCH;
        }
        config
    }
}

/// What `--group-by` groups posts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// The post's author (`user`).
    User,
}

/// Output formats of `contrastgeo locate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per post: the answer, its shortlist (`top_k`) and evidence.
    #[default]
    Jsonl,
    /// One CSV row per post: line, id, the answered city, score and probability.
    Csv,
}

/// One part of a sharded input: lines `n` with `(n - 1) % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This part, from 0.
    pub index: usize,
    /// Number of parts.
    pub count: usize,
}

impl Shard {
    /// Whether 1-based input line `line` belongs to this part.
    pub fn owns(self, line: usize) -> bool {
        (line - 1) % self.count == self.index
    }
}

/// Parses `I/N`.
pub fn parse_shard(text: &str) -> Result<Shard, String> {
    let (index, count) = text
        .split_once('/')
        .ok_or_else(|| format!("expected I/N (e.g. 0/4), got {text:?}"))?;
    let parse = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("{s:?} is not a number"))
    };
    let (index, count) = (parse(index)?, parse(count)?);
    if index >= count {
        return Err(format!(
            "shard {index}/{count}: I must be below N (shards are numbered from 0)"
        ));
    }
    Ok(Shard { index, count })
}

/// One JSONL output line of `contrastgeo locate` (schema: `schema/located_post.schema.json`).
#[derive(Serialize, schemars::JsonSchema)]
pub struct LocatedRecord<'a> {
    /// 1-based input line number.
    pub line: usize,
    /// The input's `id`, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a serde_json::Value>,
    /// The answer for the post.
    #[serde(flatten)]
    pub answer: &'a Answer,
}

/// One JSONL output line of `contrastgeo locate --group-by user` (schema:
/// `schema/located_author.schema.json`).
#[derive(Serialize, schemars::JsonSchema)]
pub struct LocatedAuthorRecord<'a> {
    /// The author (`user`).
    pub user: &'a str,
    /// 1-based input lines of the author's posts, in input order.
    pub lines: Vec<usize>,
    /// The answer from all of the author's posts (`weighing_posts[].index` counts within `lines`).
    #[serde(flatten)]
    pub answer: &'a AuthorAnswer,
    /// Input lines of the posts that weighed most, in the order of `weighing_posts`.
    pub weighing_lines: Vec<usize>,
}

/// The columns of `--output-format csv`, in order.
const CSV_COLUMNS: [&str; 10] = [
    "line",
    "id",
    "city_id",
    "name",
    "admin1",
    "country",
    "lat",
    "lon",
    "score",
    "probability",
];

/// The columns of `--group-by user --output-format csv`, in order.
const AUTHOR_CSV_COLUMNS: [&str; 10] = [
    "user",
    "posts",
    "city_id",
    "name",
    "admin1",
    "country",
    "lat",
    "lon",
    "score",
    "probability",
];

/// The answer's columns of a CSV row, after the row's first two (the last 8 of [`CSV_COLUMNS`] and
/// [`AUTHOR_CSV_COLUMNS`]).
fn city_columns(answer: &Answer) -> [String; 8] {
    [
        answer.city_id.to_string(),
        answer.name.clone(),
        answer.admin1.clone().unwrap_or_default(),
        answer.country.clone(),
        answer.lat.to_string(),
        answer.lon.to_string(),
        answer.score.to_string(),
        answer.probability.to_string(),
    ]
}

/// Writes answers in the chosen [`OutputFormat`].
enum AnswerWriter {
    Jsonl(Box<dyn Write>),
    Csv(Box<csv::Writer<Box<dyn Write>>>),
}

impl AnswerWriter {
    /// A writer onto `out`; CSV starts with its header row, so even an empty result names the columns.
    fn new(out: Box<dyn Write>, format: OutputFormat, columns: &[&str]) -> anyhow::Result<Self> {
        Ok(match format {
            OutputFormat::Jsonl => Self::Jsonl(out),
            OutputFormat::Csv => {
                let mut csv = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(out);
                csv.write_record(columns)?;
                Self::Csv(Box::new(csv))
            }
        })
    }

    /// Writes the answer for input `line`.
    fn write(&mut self, line: &InputLine, answer: &Answer) -> anyhow::Result<()> {
        match self {
            Self::Jsonl(out) => {
                let record = LocatedRecord {
                    line: line.line,
                    id: line.id.as_ref(),
                    answer,
                };
                serde_json::to_writer(&mut *out, &record)?;
                out.write_all(b"\n")?;
            }
            Self::Csv(csv) => {
                let id = match &line.id {
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                csv.write_record(
                    [line.line.to_string(), id]
                        .into_iter()
                        .chain(city_columns(answer)),
                )?;
            }
        }
        Ok(())
    }

    /// Writes the answer for the author `user` whose posts are `lines`.
    fn write_author(
        &mut self,
        user: &str,
        lines: &[InputLine],
        answer: &AuthorAnswer,
    ) -> anyhow::Result<()> {
        let line_of = |w: &WeighingPost| lines.get(w.index).map_or(0, |l| l.line);
        match self {
            Self::Jsonl(out) => {
                let record = LocatedAuthorRecord {
                    user,
                    lines: lines.iter().map(|l| l.line).collect(),
                    answer,
                    weighing_lines: answer.weighing_posts.iter().map(line_of).collect(),
                };
                serde_json::to_writer(&mut *out, &record)?;
                out.write_all(b"\n")?;
            }
            Self::Csv(csv) => {
                csv.write_record(
                    [user.to_string(), lines.len().to_string()]
                        .into_iter()
                        .chain(city_columns(&answer.answer)),
                )?;
            }
        }
        Ok(())
    }

    /// Flushes everything written.
    fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Jsonl(out) => out.flush()?,
            Self::Csv(csv) => csv.flush()?,
        }
        Ok(())
    }
}

/// Runs the command; returns how many input lines were rejected.
pub fn run(args: &LocateArgs) -> anyhow::Result<usize> {
    let config = args.engine.config_for(args.store.as_deref());
    config.validate()?;
    tracing::info!(?config, shard = ?args.shard, group_by = ?args.group_by, "locating");
    let store = open_store(args.store.as_deref(), &args.model, config, None)?;
    let engine = store.engine();
    let (mut reader, size) = PostReader::open(args.posts.input.as_deref(), args.posts.format)?;
    if args.group_by.is_some() {
        return locate_authors(args, &engine, &mut reader, size);
    }
    let mut out = AnswerWriter::new(
        open_output(args.output.as_deref())?,
        args.output_format,
        &CSV_COLUMNS,
    )?;
    let bar = bulk_progress(size);
    let (mut located, mut rejected) = (0u64, 0usize);
    while let Some((good, bad, bytes)) = next_posts(&mut reader, args.shard, &bar)? {
        rejected += bad;
        let posts: Vec<PostQuery> = good.iter().filter_map(post_query).collect();
        let answers = engine.locate_posts(&posts)?;
        for (line, answer) in good.iter().zip(&answers) {
            out.write(line, answer)?;
        }
        located += good.len() as u64;
        bar.inc(bytes);
        bar.set_message(rate_message(located, &bar));
    }
    out.flush()?;
    bar.finish_and_clear();
    tracing::info!(located, rejected, "locate finished");
    // The process ends once this returns, and locate wrote nothing to the store: freeing the world store's
    // graph and tables point by point would cost 0.1-0.3 s of a bulk run on 2 cores for memory the exit
    // hands back at once (sled and tantivy survive a process that stops without closing them).
    drop(engine);
    std::mem::forget(store);
    Ok(rejected)
}

/// The next chunk of input: the posts of this shard to locate, how many of its lines were rejected (each
/// reported by [`keep_posts`]), and the input bytes it covered; `None` at the end of the input.
fn next_posts(
    reader: &mut PostReader,
    shard: Option<Shard>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Option<(Vec<InputLine>, usize, u64)>> {
    let (chunk, bytes) = reader.next_chunk(CHUNK_LINES).context("reading input")?;
    if chunk.is_empty() {
        return Ok(None);
    }
    let mine = chunk
        .into_iter()
        .filter(|l| shard.is_none_or(|s| s.owns(l.line)));
    let (good, bad) = keep_posts(mine, bar);
    Ok(Some((good, bad, bytes)))
}

/// The query for a kept input line (text and profile location).
fn post_query(line: &InputLine) -> Option<PostQuery<'_>> {
    Some(PostQuery {
        text: line.text.as_deref().ok()?,
        profile: line.user_location.as_deref(),
    })
}

/// Authors located per engine call: bounds the memory of one call.
const AUTHORS_PER_CALL: usize = 256;

/// `locate --group-by user`: reads every post, groups them by author (first appearance order), and writes
/// one answer per author.
fn locate_authors(
    args: &LocateArgs,
    engine: &crate::engine::Engine,
    reader: &mut PostReader,
    size: Option<u64>,
) -> anyhow::Result<usize> {
    let bar = bulk_progress(size);
    let mut rejected = 0usize;
    let mut authors: Vec<(String, Vec<InputLine>)> = Vec::new();
    let mut position: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    while let Some((good, bad, bytes)) = next_posts(reader, args.shard, &bar)? {
        rejected += bad;
        for line in good {
            let Some(user) = line.user.clone() else {
                bar.suspend(|| eprintln!("line {}: no `user` to group by; skipped", line.line));
                rejected += 1;
                continue;
            };
            let at = *position.entry(user.clone()).or_insert_with(|| {
                authors.push((user, Vec::new()));
                authors.len() - 1
            });
            authors[at].1.push(line);
        }
        bar.inc(bytes);
    }
    let mut out = AnswerWriter::new(
        open_output(args.output.as_deref())?,
        args.output_format,
        &AUTHOR_CSV_COLUMNS,
    )?;
    bar.set_message("locating authors");
    for batch in authors.chunks(AUTHORS_PER_CALL) {
        let queries: Vec<Vec<PostQuery>> = batch
            .iter()
            .map(|(_, lines)| lines.iter().filter_map(post_query).collect())
            .collect();
        let answers = engine.locate_authors(&queries, args.author_rule)?;
        for ((user, lines), answer) in batch.iter().zip(&answers) {
            out.write_author(user, lines, answer)?;
        }
    }
    out.flush()?;
    bar.finish_and_clear();
    tracing::info!(
        authors = authors.len(),
        rejected,
        "locate --group-by user finished"
    );
    Ok(rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_lines_round_robin_and_bad_specs_are_refused() {
        let shard = parse_shard("1/3").unwrap();
        let owned: Vec<usize> = (1..=7).filter(|&l| shard.owns(l)).collect();
        assert_eq!(owned, vec![2, 5]);
        assert!(parse_shard("3/3").is_err());
        assert!(parse_shard("1").is_err());
        assert!(parse_shard("a/2").is_err());
    }

    fn answer(name: &str, admin1: Option<&str>) -> Answer {
        Answer {
            city: Some(format!("{name}, United States")),
            city_id: 4853828,
            name: name.into(),
            admin1: admin1.map(Into::into),
            country: "United States".into(),
            lat: 41.60054,
            lon: -93.60911,
            score: 12.5,
            probability: 0.25,
            top_k: Vec::new(),
            evidence: Vec::new(),
        }
    }

    /// A writer into a buffer the test can read after the writer is gone.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn written(format: OutputFormat, rows: &[(InputLine, Answer)]) -> String {
        let buffer = Shared::default();
        let mut out = AnswerWriter::new(Box::new(buffer.clone()), format, &CSV_COLUMNS).unwrap();
        for (line, answer) in rows {
            out.write(line, answer).unwrap();
        }
        out.flush().unwrap();
        drop(out);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn csv_output_has_a_header_and_quotes_fields_only_when_needed() {
        assert_eq!(
            written(OutputFormat::Csv, &[]),
            "line,id,city_id,name,admin1,country,lat,lon,score,probability\n"
        );
        let line = |line, id: Option<serde_json::Value>| InputLine {
            line,
            id,
            text: Ok("post".into()),
            ..InputLine::default()
        };
        let text = written(
            OutputFormat::Csv,
            &[
                (line(1, None), answer("Des Moines", Some("Iowa"))),
                (
                    line(3, Some(serde_json::json!("x,\"1\""))),
                    answer("Washington, D.C.", None),
                ),
                (
                    line(4, Some(serde_json::json!(17))),
                    answer("Two\nLines", None),
                ),
            ],
        );
        let rows: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(
            rows[1],
            "1,,4853828,Des Moines,Iowa,United States,41.60054,-93.60911,12.5,0.25"
        );
        assert_eq!(
            rows[2],
            "3,\"x,\"\"1\"\"\",4853828,\"Washington, D.C.\",,United States,41.60054,-93.60911,12.5,0.25"
        );
        assert!(rows[3].starts_with("4,17,4853828,\"Two"), "{text}");

        // And a CSV reader gets the same fields back.
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let names: Vec<String> = reader
            .records()
            .map(|r| r.unwrap()[3].to_string())
            .collect();
        assert_eq!(names, ["Des Moines", "Washington, D.C.", "Two\nLines"]);
    }

    #[test]
    fn jsonl_output_is_one_record_per_line_with_the_input_id() {
        let line = InputLine {
            line: 5,
            id: Some(serde_json::json!("p5")),
            text: Ok("post".into()),
            ..InputLine::default()
        };
        let text = written(OutputFormat::Jsonl, &[(line, answer("Ames", None))]);
        assert_eq!(text.lines().count(), 1);
        let record: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(record["line"], 5);
        assert_eq!(record["id"], "p5");
        assert_eq!(record["name"], "Ames");
    }
}
