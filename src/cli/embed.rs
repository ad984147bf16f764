//! `contrastgeo embed`: posts in, one JSONL embedding per post out.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::input::{keep_posts, PostsInput};
use super::progress::{bulk_progress, rate_message};
use super::{open_output, ModelArgs};
use crate::input::PostReader;

/// Arguments of `contrastgeo embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Where posts come from.
    #[command(flatten)]
    pub posts: PostsInput,
    /// Output JSONL file; absent for stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Model options.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// One output line of `contrastgeo embed`.
#[derive(serde::Serialize)]
struct EmbeddingRecord<'a> {
    /// 1-based input line number.
    line: usize,
    /// The input's `id`, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a serde_json::Value>,
    /// Unit-length embedding.
    embedding: Vec<f32>,
}

/// Lines read and embedded per round: bounds memory on any input size.
const CHUNK_LINES: usize = 2048;

/// Runs the command; returns how many input lines were rejected.
pub fn run(args: &EmbedArgs) -> anyhow::Result<usize> {
    let encoder = args.model.load_encoder()?;
    let (mut reader, size) = PostReader::open(args.posts.input.as_deref(), args.posts.format)?;
    let mut out = open_output(args.output.as_deref())?;
    let bar = bulk_progress(size);
    let (mut embedded, mut rejected) = (0u64, 0usize);
    loop {
        let (chunk, bytes) = reader.next_chunk(CHUNK_LINES).context("reading input")?;
        if chunk.is_empty() {
            break;
        }
        let (good, bad) = keep_posts(chunk, &bar);
        rejected += bad;
        let texts: Vec<&str> = good.iter().filter_map(|l| l.text.as_deref().ok()).collect();
        let embeddings = encoder.embed(&texts)?;
        for (line, embedding) in good.iter().zip(embeddings) {
            let record = EmbeddingRecord {
                line: line.line,
                id: line.id.as_ref(),
                embedding,
            };
            serde_json::to_writer(&mut out, &record)?;
            out.write_all(b"\n")?;
        }
        embedded += good.len() as u64;
        bar.inc(bytes);
        bar.set_message(rate_message(embedded, &bar));
    }
    out.flush()?;
    bar.finish_and_clear();
    tracing::info!(embedded, rejected, "embed finished");
    Ok(rejected)
}
