//! Reading posts for bulk work, from a file or stdin: plain lines, JSONL objects with a `text` field, or
//! CSV/TSV tables with a header row naming a `text` column.
//!
//! Each line (each table record) becomes one [`InputLine`]; one that cannot be read as a post (invalid
//! UTF-8, bad JSON, no text) carries its error and line number, so a bulk command reports it and goes on.
//! Tables are read with the `csv` crate, streaming like the line formats; a record's line number is the
//! line it starts on (the header is line 1), so a quoted text spanning several lines keeps the numbers of
//! the records after it true to the file.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::lines::{BoundedLines, Line, MAX_LINE_BYTES};

/// How input lines are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InputFormat {
    /// A file named `*.csv` or `*.tsv` is read as that table; otherwise JSONL when a line starts with `{`,
    /// else the line is the text.
    #[default]
    Auto,
    /// Every line is the text of one post.
    Lines,
    /// Every line is a JSON object with a `text` field (and an optional `id`).
    Jsonl,
    /// Comma-separated values (RFC 4180 quoting) with a header row naming a `text` column and optionally
    /// an `id` column.
    Csv,
    /// Tab-separated values with a header row, quoted like CSV.
    Tsv,
}

impl InputFormat {
    /// The format to read `path` with: `Auto` becomes `Csv` or `Tsv` for a `.csv` or `.tsv` file name (any
    /// case); everything else is returned unchanged.
    pub fn for_path(self, path: &Path) -> Self {
        if self != Self::Auto {
            return self;
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Self::Csv,
            Some(e) if e.eq_ignore_ascii_case("tsv") => Self::Tsv,
            _ => self,
        }
    }

    /// The field delimiter of a table format.
    fn delimiter(self) -> Option<u8> {
        match self {
            Self::Csv => Some(b','),
            Self::Tsv => Some(b'\t'),
            Self::Auto | Self::Lines | Self::Jsonl => None,
        }
    }
}

/// One post read from input, or why its line could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct InputLine {
    /// 1-based line number in the input (for a table record, the line it starts on).
    pub line: usize,
    /// The post's `id` field (JSONL, or the `id` column of a table when not empty).
    pub id: Option<serde_json::Value>,
    /// The post text, or a message saying what is wrong with the line.
    pub text: Result<String, String>,
    /// The author (`user` field or column, when not empty; a number is read as its decimal text).
    pub user: Option<String>,
    /// The author's profile location (`user_location` field or column, when not empty).
    pub user_location: Option<String>,
}

impl Default for InputLine {
    fn default() -> Self {
        Self {
            line: 0,
            id: None,
            text: Err(String::new()),
            user: None,
            user_location: None,
        }
    }
}

/// Streams [`InputLine`]s from a reader.
pub struct PostReader {
    source: Source,
}

enum Source {
    Lines(LineSource),
    Table(TableSource),
}

impl PostReader {
    /// Reads from `path`, or stdin when `path` is `-` or absent; `Auto` picks a table format from the file
    /// name ([`InputFormat::for_path`]). Returns the reader and the input size in bytes when known (for
    /// progress).
    pub fn open(path: Option<&Path>, format: InputFormat) -> std::io::Result<(Self, Option<u64>)> {
        match path {
            Some(p) if p != Path::new("-") => {
                let file = std::fs::File::open(p)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
                let size = file.metadata().ok().map(|m| m.len());
                Ok((
                    Self::new(
                        Box::new(BufReader::with_capacity(1 << 20, file)),
                        format.for_path(p),
                    ),
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
        let source = match format.delimiter() {
            Some(delimiter) => Source::Table(TableSource::new(reader, delimiter)),
            None => Source::Lines(LineSource {
                lines: BoundedLines::new(reader, MAX_LINE_BYTES),
                format,
            }),
        };
        Self { source }
    }

    /// Caps lines (table records) at `max` bytes instead of [`MAX_LINE_BYTES`]: a longer line is skipped
    /// and reported; a longer table record stops the read with an error naming its line (a table cannot be
    /// resynchronised reliably inside a runaway quoted field).
    pub fn with_line_limit(mut self, max: usize) -> Self {
        match &mut self.source {
            Source::Lines(lines) => {
                let reader = std::mem::replace(
                    &mut lines.lines,
                    BoundedLines::new(Box::new(std::io::empty()), max),
                );
                lines.lines = BoundedLines::new(reader.into_inner(), max);
            }
            Source::Table(table) => table.reader.get_mut().max_record = max,
        }
        self
    }

    /// Wraps in-memory bytes (tests, small inputs).
    pub fn from_bytes(bytes: Vec<u8>, format: InputFormat) -> Self {
        Self::new(
            Box::new(BufReader::new(std::io::Cursor::new(bytes))),
            format,
        )
    }

    /// Reads up to `max` lines (table records); an empty vector means the input is exhausted. Also returns
    /// bytes consumed. A table without a `text` column in its header is an error.
    pub fn next_chunk(&mut self, max: usize) -> std::io::Result<(Vec<InputLine>, u64)> {
        match &mut self.source {
            Source::Lines(lines) => lines.next_chunk(max),
            Source::Table(table) => table.next_chunk(max),
        }
    }
}

/// Plain lines and JSONL.
struct LineSource {
    lines: BoundedLines<Box<dyn BufRead + Send>>,
    format: InputFormat,
}

impl LineSource {
    fn next_chunk(&mut self, max: usize) -> std::io::Result<(Vec<InputLine>, u64)> {
        let mut chunk = Vec::with_capacity(max);
        let mut consumed = 0u64;
        let limit = self.lines.max();
        while chunk.len() < max {
            let Some((number, read, line)) = self.lines.next_line()? else {
                break;
            };
            consumed += read;
            chunk.push(match line {
                Line::Kept(bytes) => parse_line(number, bytes, self.format),
                Line::TooLong { bytes } => InputLine {
                    line: number,
                    id: None,
                    text: Err(Line::too_long_message(bytes, limit)),
                    ..InputLine::default()
                },
            });
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
                ..InputLine::default()
            }
        }
    };
    let is_json = match format {
        InputFormat::Jsonl => true,
        InputFormat::Lines | InputFormat::Csv | InputFormat::Tsv => false,
        InputFormat::Auto => text.trim_start().starts_with('{'),
    };
    if !is_json {
        return InputLine {
            line,
            id: None,
            text: Ok(text.to_string()),
            ..InputLine::default()
        };
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Err(e) => InputLine {
            line,
            id: None,
            text: Err(format!("invalid JSON: {e}")),
            ..InputLine::default()
        },
        Ok(value) => {
            let id = value.get("id").cloned();
            let text = match value.get("text") {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err("field `text` is not a string".to_string()),
                None => Err("JSON object has no `text` field".to_string()),
            };
            let optional = |name: &str| match value.get(name) {
                Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            InputLine {
                line,
                id,
                text,
                user: optional("user"),
                user_location: optional("user_location"),
            }
        }
    }
}

/// Where the post's fields are in a table's records, from its header row.
#[derive(Debug, Clone, Copy)]
struct Columns {
    text: usize,
    id: Option<usize>,
    user: Option<usize>,
    user_location: Option<usize>,
}

impl Columns {
    /// Finds the `text` and `id` columns (names trimmed, any case); a UTF-8 byte order mark is ignored.
    fn from_header(header: &csv::ByteRecord) -> std::io::Result<Self> {
        let names: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let name = if i == 0 {
                    name.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(name)
                } else {
                    name
                };
                String::from_utf8_lossy(name).trim().to_string()
            })
            .collect();
        let find = |wanted: &str| names.iter().position(|n| n.eq_ignore_ascii_case(wanted));
        let text = find("text").ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the header row has no `text` column (found {names:?}); name the column of post \
                     texts `text`, or pick another --format"
                ),
            )
        })?;
        Ok(Self {
            text,
            id: find("id"),
            user: find("user"),
            user_location: find("user_location"),
        })
    }
}

/// CSV and TSV through the `csv` crate: a header row, then one post per record.
struct TableSource {
    reader: csv::Reader<CountingReader>,
    columns: Option<Columns>,
    record: csv::ByteRecord,
    /// Input bytes the parser has consumed so far.
    offset: u64,
    /// Line feeds in those bytes.
    newlines: usize,
    /// A fatal read error held back until the records read before it were returned.
    failed: Option<std::io::Error>,
}

/// Keeps the bytes the CSV parser has read but not yet accounted for, so that a record's line number is
/// counted from the input itself: the parser's own line positions run one behind on CRLF input and after
/// blank lines.
struct CountingReader {
    inner: Box<dyn BufRead + Send>,
    /// Bytes read from `inner` from the parser's current offset on.
    pending: Vec<u8>,
    /// The longest record kept; past it (plus the parser's read-ahead) reading stops with an error.
    max_record: usize,
}

/// Slack over `max_record` for the bytes the CSV parser reads ahead of the record it is on.
const TABLE_READ_AHEAD: usize = 64 * 1024;

/// Marks the I/O error a [`CountingReader`] returns for a runaway record.
#[derive(Debug)]
struct RecordTooLong;

impl std::fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("record too long")
    }
}

impl std::error::Error for RecordTooLong {}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.len() > self.max_record + TABLE_READ_AHEAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                RecordTooLong,
            ));
        }
        let read = self.inner.read(buf)?;
        self.pending.extend_from_slice(&buf[..read]);
        Ok(read)
    }
}

impl TableSource {
    fn new(reader: Box<dyn BufRead + Send>, delimiter: u8) -> Self {
        let reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            // A record with a missing or extra field is reported on its own, not as a read error.
            .flexible(true)
            .from_reader(CountingReader {
                inner: reader,
                pending: Vec::new(),
                max_record: MAX_LINE_BYTES,
            });
        Self {
            reader,
            columns: None,
            record: csv::ByteRecord::new(),
            offset: 0,
            newlines: 0,
            failed: None,
        }
    }

    fn next_chunk(&mut self, max: usize) -> std::io::Result<(Vec<InputLine>, u64)> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        let started = self.offset;
        let mut chunk = Vec::with_capacity(max);
        while chunk.len() < max {
            let read = self.reader.read_byte_record(&mut self.record);
            let line = self.account_for_record();
            match read {
                Ok(false) => break,
                Ok(true) => match self.columns {
                    None => self.columns = Some(Columns::from_header(&self.record)?),
                    Some(columns) => chunk.push(table_post(line, &self.record, columns)),
                },
                Err(error) => match error.into_kind() {
                    csv::ErrorKind::Io(error)
                        if error.get_ref().is_some_and(|e| e.is::<RecordTooLong>()) =>
                    {
                        let error = std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "line {line}: a table record longer than {} bytes (an unclosed quote?); \
                                 stopped reading",
                                self.reader.get_ref().max_record
                            ),
                        );
                        // The records before it are answered first; the next call reports it.
                        if chunk.is_empty() {
                            return Err(error);
                        }
                        self.failed = Some(error);
                        break;
                    }
                    csv::ErrorKind::Io(error) => return Err(error),
                    // Flexible byte records leave the parser no other error; report one and go on.
                    other => chunk.push(InputLine {
                        line,
                        id: None,
                        text: Err(format!("unreadable record: {other:?}")),
                        ..InputLine::default()
                    }),
                },
            }
        }
        let consumed = self.offset - started;
        Ok((chunk, consumed))
    }

    /// Moves past the bytes the last read consumed (blank lines, the record, its terminator) and returns the
    /// 1-based line on which the record starts.
    fn account_for_record(&mut self) -> usize {
        let end = self.reader.position().byte();
        let pending = &mut self.reader.get_mut().pending;
        let used = usize::try_from(end - self.offset)
            .unwrap_or(usize::MAX)
            .min(pending.len());
        let consumed = &pending[..used];
        let blank = consumed
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
        let line_feeds = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'\n').count();
        let line = self.newlines + line_feeds(&consumed[..blank]) + 1;
        self.newlines += line_feeds(consumed);
        pending.drain(..used);
        self.offset = end;
        line
    }
}

fn table_post(line: usize, record: &csv::ByteRecord, columns: Columns) -> InputLine {
    let field = |index: usize, name: &str| -> Result<Option<String>, String> {
        match record.get(index) {
            None => Ok(None),
            Some(raw) => std::str::from_utf8(raw)
                .map(|s| Some(s.to_string()))
                .map_err(|e| {
                    format!(
                        "invalid UTF-8 in column `{name}` at byte {}",
                        e.valid_up_to()
                    )
                }),
        }
    };
    let id = match columns.id.map(|i| field(i, "id")).transpose() {
        Ok(id) => id
            .flatten()
            .filter(|id| !id.is_empty())
            .map(serde_json::Value::String),
        Err(why) => {
            return InputLine {
                line,
                id: None,
                text: Err(why),
                ..InputLine::default()
            }
        }
    };
    let text = field(columns.text, "text").and_then(|text| {
        text.ok_or_else(|| {
            format!(
                "record has {} field(s), no `text` column (column {})",
                record.len(),
                columns.text + 1
            )
        })
    });
    // An optional column that is missing from the record, empty, or not UTF-8 is simply absent.
    let optional = |index: Option<usize>, name: &str| {
        index
            .and_then(|i| field(i, name).ok().flatten())
            .filter(|v| !v.trim().is_empty())
    };
    InputLine {
        line,
        id,
        text,
        user: optional(columns.user, "user"),
        user_location: optional(columns.user_location, "user_location"),
    }
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
    fn csv_reads_text_and_id_columns_and_reports_bad_records_by_line() {
        // CRLF line ends (as spreadsheets write them), a byte order mark, a blank line, a quoted text over
        // two lines with a comma and quotes, a short record, invalid UTF-8 and no final line end.
        let mut input = b"\xEF\xBB\xBFlang, ID ,Text\r\n".to_vec();
        input.extend_from_slice(b"en,p1,Just landed in Des Moines\r\n");
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(b"en,,\"Omaha, NE:\r\n\"\"Old Market\"\"\"\r\n");
        input.extend_from_slice(b"fr,p4\r\n");
        input.extend_from_slice(b"en,p5,bad \xff utf8\r\n");
        input.extend_from_slice(b"en,p6,,extra field\r\n");
        input.extend_from_slice(b"en,7,last");
        let lines = read_all(std::io::Cursor::new(input), InputFormat::Csv).unwrap();
        let numbers: Vec<usize> = lines.iter().map(|l| l.line).collect();
        assert_eq!(numbers, vec![2, 4, 6, 7, 8, 9]);
        assert_eq!(lines[0].id, Some(serde_json::json!("p1")));
        assert_eq!(lines[0].text.as_deref(), Ok("Just landed in Des Moines"));
        assert_eq!(lines[1].id, None, "an empty id is no id");
        assert_eq!(lines[1].text.as_deref(), Ok("Omaha, NE:\r\n\"Old Market\""));
        assert!(lines[2].text.as_ref().unwrap_err().contains("no `text`"));
        assert!(lines[3].text.as_ref().unwrap_err().contains("UTF-8"));
        assert_eq!(lines[4].text.as_deref(), Ok(""), "rejected later as empty");
        assert_eq!(lines[5].id, Some(serde_json::json!("7")));
        assert_eq!(lines[5].text.as_deref(), Ok("last"));
    }

    #[test]
    fn tsv_streams_in_chunks_with_true_line_numbers_and_byte_counts() {
        let input =
            b"text\tid\nfirst post\t1\n\"two\nlines\"\t2\n\nthird, with a comma\t3\n".to_vec();
        let total = input.len() as u64;
        let mut reader = PostReader::from_bytes(input, InputFormat::Tsv);
        let (mut lines, mut consumed) = (Vec::new(), 0);
        loop {
            let (chunk, bytes) = reader.next_chunk(2).unwrap();
            consumed += bytes;
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= 2);
            lines.extend(chunk);
        }
        assert_eq!(consumed, total);
        let read: Vec<(usize, &str)> = lines
            .iter()
            .map(|l| (l.line, l.text.as_deref().unwrap()))
            .collect();
        assert_eq!(
            read,
            vec![
                (2, "first post"),
                (3, "two\nlines"),
                (6, "third, with a comma")
            ]
        );
    }

    #[test]
    fn a_table_without_a_text_column_is_refused_with_the_columns_found() {
        let err = read_all(
            std::io::Cursor::new(b"id,body\n1,hello\n".to_vec()),
            InputFormat::Csv,
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let message = err.to_string();
        assert!(message.contains("no `text` column"), "{message}");
        assert!(message.contains("\"body\""), "{message}");
        // An empty input has no header and no posts: nothing to refuse.
        assert!(read_all(std::io::Cursor::new(Vec::new()), InputFormat::Csv)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn auto_format_reads_csv_and_tsv_files_by_their_extension() {
        assert_eq!(
            InputFormat::Auto.for_path(Path::new("posts.CSV")),
            InputFormat::Csv
        );
        assert_eq!(
            InputFormat::Auto.for_path(Path::new("a/posts.tsv")),
            InputFormat::Tsv
        );
        assert_eq!(
            InputFormat::Auto.for_path(Path::new("posts.jsonl")),
            InputFormat::Auto
        );
        assert_eq!(
            InputFormat::Lines.for_path(Path::new("posts.csv")),
            InputFormat::Lines,
            "an explicit format wins"
        );
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [
            ("posts.csv", "id,text\nx,\"hello, austin\"\n"),
            ("posts.tsv", "id\ttext\nx\thello, austin\n"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let (mut reader, size) = PostReader::open(Some(&path), InputFormat::Auto).unwrap();
            assert_eq!(size, Some(content.len() as u64));
            let (lines, _) = reader.next_chunk(10).unwrap();
            assert_eq!(lines.len(), 1, "{name}");
            assert_eq!(lines[0].line, 2);
            assert_eq!(lines[0].id, Some(serde_json::json!("x")));
            assert_eq!(lines[0].text.as_deref(), Ok("hello, austin"));
        }
    }

    #[test]
    fn a_runaway_table_record_stops_the_read_naming_its_line_and_long_lines_are_skipped() {
        let mut input = b"id,text\n1,fine\n2,\"an unclosed quote".to_vec();
        input.extend(std::iter::repeat_n(b'x', 512 * 1024));
        let mut reader = PostReader::from_bytes(input, InputFormat::Csv).with_line_limit(1024);
        let (before, _) = reader.next_chunk(10).unwrap();
        assert_eq!(before.len(), 1, "the record before the runaway one is kept");
        assert_eq!(before[0].text.as_deref(), Ok("fine"));
        let err = reader.next_chunk(10).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("line 3"), "{err}");

        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat_n(b'y', 4096));
        input.extend_from_slice(b"\nlast\n");
        let mut reader = PostReader::from_bytes(input, InputFormat::Lines).with_line_limit(1024);
        let (lines, _) = reader.next_chunk(10).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].text.as_deref(), Ok("short"));
        assert!(lines[1].text.as_ref().unwrap_err().contains("4096 bytes"));
        assert_eq!(lines[2].text.as_deref(), Ok("last"));
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
