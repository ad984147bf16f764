//! The input flags of every bulk command, and how rejected lines are reported; reading the posts is the
//! library's ([`crate::input`]).

use crate::input::{InputFormat, InputLine};

/// The input options of every bulk command.
#[derive(Debug, Clone, clap::Args)]
pub struct PostsInput {
    /// Input file of posts (one per line, JSONL with a `text` field, or CSV/TSV with a `text` column); `-` or
    /// absent for stdin.
    #[arg(long, short)]
    pub input: Option<std::path::PathBuf>,
    /// How to read the input (`auto` reads a `.csv` or `.tsv` file as that table).
    #[arg(long, value_enum, default_value_t)]
    pub format: InputFormat,
}

/// Splits read lines into those holding a post to process and the rest. Each rejected line (unreadable, or
/// with empty text) is reported on stderr as `line N: why; skipped`, above the progress `bar`. Returns the
/// posts and how many lines were rejected.
pub fn keep_posts(
    lines: impl IntoIterator<Item = InputLine>,
    bar: &indicatif::ProgressBar,
) -> (Vec<InputLine>, usize) {
    let (good, bad): (Vec<InputLine>, Vec<InputLine>) = lines
        .into_iter()
        .partition(|l| l.text.as_ref().is_ok_and(|t| !t.trim().is_empty()));
    for line in &bad {
        let why = line
            .text
            .as_ref()
            .err()
            .map(String::as_str)
            .unwrap_or("empty text");
        bar.suspend(|| eprintln!("line {}: {why}; skipped", line.line));
    }
    (good, bad.len())
}
