//! Reading posts for bulk commands: plain lines or JSONL objects with a `text` field, from a file or stdin.
//!
//! Each line becomes one [`InputLine`]; a line that cannot be read as a post (invalid UTF-8, bad JSON, no
//! text) carries its error and line number, so a bulk command reports it and goes on.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// How input lines are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InputFormat {
    /// JSONL when a line starts with `{`, else the line is the text.
    #[default]
    Auto,
    /// Every line is the text of one post.
    Lines,
    /// Every line is a JSON object with a `text` field (and an optional `id`).
    Jsonl,
}

/// One post read from input, or why its line could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct InputLine {
    /// 1-based line number in the input.
    pub line: usize,
    /// The post's `id` field (JSONL only).
    pub id: Option<serde_json::Value>,
    /// The post text, or a message saying what is wrong with the line.
    pub text: Result<String, String>,
}

/// Streams [`InputLine`]s from a reader.
pub struct PostReader {
    reader: Box<dyn BufRead + Send>,
    format: InputFormat,
    line: usize,
    buffer: Vec<u8>,
}

impl PostReader {
    /// Reads from `path`, or stdin when `path` is `-` or absent. Returns the reader and the input size in bytes
    /// when known (for progress).
    pub fn open(path: Option<&Path>, format: InputFormat) -> std::io::Result<(Self, Option<u64>)> {
        match path {
            Some(p) if p != Path::new("-") => {
                let file = std::fs::File::open(p)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
                let size = file.metadata().ok().map(|m| m.len());
                Ok((
                    Self::new(Box::new(BufReader::with_capacity(1 << 20, file)), format),
                    size,
                ))
            }
            _ => Ok((
                Self::new(Box::new(BufReader::new(std::io::stdin())), format),
                None,
            )),
        }
    }

    /// Wraps any reader.
    pub fn new(reader: Box<dyn BufRead + Send>, format: InputFormat) -> Self {
        Self {
            reader,
            format,
            line: 0,
            buffer: Vec::new(),
        }
    }

    /// Wraps in-memory bytes (tests, small inputs).
    pub fn from_bytes(bytes: Vec<u8>, format: InputFormat) -> Self {
        Self::new(
            Box::new(BufReader::new(std::io::Cursor::new(bytes))),
            format,
        )
    }

    /// Reads up to `max` lines; an empty vector means the input is exhausted. Also returns bytes consumed.
    pub fn next_chunk(&mut self, max: usize) -> std::io::Result<(Vec<InputLine>, u64)> {
        let mut chunk = Vec::with_capacity(max);
        let mut consumed = 0u64;
        while chunk.len() < max {
            self.buffer.clear();
            let read = self.reader.read_until(b'\n', &mut self.buffer)?;
            if read == 0 {
                break;
            }
            consumed += read as u64;
            self.line += 1;
            chunk.push(parse_line(self.line, &self.buffer, self.format));
        }
        Ok((chunk, consumed))
    }
}

fn parse_line(line: usize, raw: &[u8], format: InputFormat) -> InputLine {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let text = match std::str::from_utf8(raw) {
        Ok(text) => text,
        Err(e) => {
            return InputLine {
                line,
                id: None,
                text: Err(format!("invalid UTF-8 at byte {}", e.valid_up_to())),
            }
        }
    };
    let is_json = match format {
        InputFormat::Jsonl => true,
        InputFormat::Lines => false,
        InputFormat::Auto => text.trim_start().starts_with('{'),
    };
    if !is_json {
        return InputLine {
            line,
            id: None,
            text: Ok(text.to_string()),
        };
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Err(e) => InputLine {
            line,
            id: None,
            text: Err(format!("invalid JSON: {e}")),
        },
        Ok(value) => {
            let id = value.get("id").cloned();
            let text = match value.get("text") {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err("field `text` is not a string".to_string()),
                None => Err("JSON object has no `text` field".to_string()),
            };
            InputLine { line, id, text }
        }
    }
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

/// Reads everything from `reader` as lines (used by tests and small tools).
pub fn read_all(
    reader: impl Read + Send + 'static,
    format: InputFormat,
) -> std::io::Result<Vec<InputLine>> {
    let mut posts = PostReader::new(Box::new(BufReader::new(reader)), format);
    let mut all = Vec::new();
    loop {
        let (chunk, _) = posts.next_chunk(1024)?;
        if chunk.is_empty() {
            return Ok(all);
        }
        all.extend(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_format_mixes_plain_and_json_lines_and_reports_bad_ones() {
        let mut input =
            b"hello austin\r\n{\"id\": 7, \"text\": \"howdy\"}\n{\"txt\": 1}\n{broken\n".to_vec();
        input.extend_from_slice(b"bad \xff\xfe bytes\n\nlast without newline");
        let lines = read_all(std::io::Cursor::new(input), InputFormat::Auto).unwrap();
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[0].text.as_deref(), Ok("hello austin"));
        assert_eq!(lines[1].id, Some(serde_json::json!(7)));
        assert_eq!(lines[1].text.as_deref(), Ok("howdy"));
        assert!(lines[2].text.as_ref().unwrap_err().contains("no `text`"));
        assert!(lines[3].text.as_ref().unwrap_err().contains("invalid JSON"));
        assert!(lines[4].text.as_ref().unwrap_err().contains("UTF-8"));
        assert_eq!(lines[5].text.as_deref(), Ok(""));
        assert_eq!(
            (lines[6].line, lines[6].text.as_deref()),
            (7, Ok("last without newline"))
        );
    }

    #[test]
    fn lines_format_never_parses_json() {
        let lines = read_all(
            std::io::Cursor::new(b"{\"text\": \"x\"}\n".to_vec()),
            InputFormat::Lines,
        )
        .unwrap();
        assert_eq!(lines[0].text.as_deref(), Ok("{\"text\": \"x\"}"));
    }
}
