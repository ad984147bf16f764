//! Reading text files line by line with a cap on line length, so that a 1 GB line or a file without
//! newlines never makes a command allocate without bound.
//!
//! Every reader of line-based input (bulk post input, labelled posts, city records) goes through
//! [`BoundedLines`]: a line longer than the cap is consumed up to its newline without being kept, and
//! returned as [`Line::TooLong`] with its number, so the caller reports it and goes on with the next line.

use std::io::BufRead;

/// The longest line kept by default: 1 MiB (a post is a few hundred bytes; a city record a few kB).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// One line read by [`BoundedLines`], without its `\n` (or `\r\n`).
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line's bytes.
    Kept(&'a [u8]),
    /// The line was longer than the cap; `bytes` is its full length, which was skipped.
    TooLong {
        /// Length of the skipped line in bytes.
        bytes: u64,
    },
}

impl Line<'_> {
    /// The message a reader reports for a line that was too long.
    pub fn too_long_message(bytes: u64, max: usize) -> String {
        format!("line of {bytes} bytes is longer than the limit of {max} bytes")
    }
}

/// A line-numbered, length-capped line reader.
pub struct BoundedLines<R> {
    reader: R,
    max: usize,
    number: usize,
    buffer: Vec<u8>,
}

impl<R: BufRead> BoundedLines<R> {
    /// Lines of `reader`, each kept only when at most `max` bytes long.
    pub fn new(reader: R, max: usize) -> Self {
        Self {
            reader,
            max,
            number: 0,
            buffer: Vec::new(),
        }
    }

    /// The next line: `(1-based number, bytes consumed including the line end, the line)`; `None` at the
    /// end of the input. A final line without a newline counts as a line.
    #[allow(clippy::type_complexity)]
    pub fn next_line(&mut self) -> std::io::Result<Option<(usize, u64, Line<'_>)>> {
        self.buffer.clear();
        let (mut consumed, mut too_long) = (0u64, false);
        // The line end's length (`\n` or `\r\n`), and the last byte seen before it.
        let (mut ending, mut last) = (0u64, 0u8);
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                break;
            }
            let (take, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if done {
                let before = if take >= 2 { available[take - 2] } else { last };
                ending = if before == b'\r' { 2 } else { 1 };
            }
            last = available[take - 1];
            if !too_long && self.buffer.len() + take <= self.max + 2 {
                self.buffer.extend_from_slice(&available[..take]);
            } else {
                too_long = true;
                self.buffer.clear();
            }
            self.reader.consume(take);
            consumed += take as u64;
            if done {
                break;
            }
        }
        if consumed == 0 {
            return Ok(None);
        }
        self.number += 1;
        let length = consumed - ending;
        let line = if too_long || length > self.max as u64 {
            Line::TooLong { bytes: length }
        } else {
            Line::Kept(&self.buffer[..length as usize])
        };
        Ok(Some((self.number, consumed, line)))
    }

    /// The reader, for reading on with another cap.
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// The cap on line length.
    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], max: usize) -> Vec<(usize, Result<Vec<u8>, u64>)> {
        // A tiny buffer makes lines span many fills.
        let reader = std::io::BufReader::with_capacity(3, input);
        let mut lines = BoundedLines::new(reader, max);
        let mut out = Vec::new();
        while let Some((n, _, line)) = lines.next_line().unwrap() {
            out.push((
                n,
                match line {
                    Line::Kept(b) => Ok(b.to_vec()),
                    Line::TooLong { bytes } => Err(bytes),
                },
            ));
        }
        out
    }

    #[test]
    fn long_lines_are_skipped_and_numbered_and_the_rest_is_kept() {
        let got = all(b"ab\r\n0123456789\nxyz\n\nlast", 5);
        assert_eq!(
            got,
            vec![
                (1, Ok(b"ab".to_vec())),
                (2, Err(10)),
                (3, Ok(b"xyz".to_vec())),
                (4, Ok(Vec::new())),
                (5, Ok(b"last".to_vec())),
            ]
        );
        assert_eq!(all(b"", 5), vec![]);
        assert_eq!(all(b"12345", 5), vec![(1, Ok(b"12345".to_vec()))]);
        assert_eq!(all(b"123456", 5), vec![(1, Err(6))]);
    }

    #[test]
    fn a_huge_line_without_newlines_is_read_in_constant_memory() {
        /// An endless stream of `x` bytes, 64 MiB long.
        struct Endless(u64);
        impl std::io::Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = (buf.len() as u64).min(self.0) as usize;
                buf[..n].fill(b'x');
                self.0 -= n as u64;
                Ok(n)
            }
        }
        let reader = std::io::BufReader::new(Endless(64 << 20));
        let mut lines = BoundedLines::new(reader, 1024);
        let (n, consumed, line) = lines.next_line().unwrap().unwrap();
        assert_eq!((n, consumed), (1, 64 << 20));
        assert_eq!(line, Line::TooLong { bytes: 64 << 20 });
        assert!(lines.buffer.capacity() < 64 * 1024, "nothing was kept");
        assert!(lines.next_line().unwrap().is_none());
    }
}
