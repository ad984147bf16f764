//! Text -> word-piece ids, with dynamic padding and length bucketing.
//!
//! The tokenizer.json shipped with all-MiniLM-L6-v2 pads every input to 128 tokens; we switch its padding off
//! and pad each batch only to its own longest member, after sorting posts by length so that batches hold
//! posts of similar length (length bucketing). Truncation keeps the first `max_length` tokens.

use candle_core::{Device, Tensor};
use tokenizers::Normalizer;
use tokenizers::{Tokenizer, TruncationParams};

use super::error::{ModelError, Result};

/// Texts longer than this many bytes are cut (at a character boundary) before tokenization. Their tokens
/// would be truncated to `max_length` anyway; the cut keeps a pathological multi-megabyte line from costing
/// seconds of tokenizer time.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// The word-piece tokenizer of a model, configured for posts.
pub struct PostTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    max_length: usize,
}

impl PostTokenizer {
    /// Loads `tokenizer.json`, switching off its fixed padding and truncating at `max_length` tokens
    /// (special tokens included).
    pub fn from_file(path: &std::path::Path, max_length: usize) -> Result<Self> {
        if max_length < 3 {
            return Err(ModelError::InvalidSetting(format!(
                "max_length must be at least 3, got {max_length}"
            )));
        }
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("cannot load {}: {e}", path.display())))?;
        let pad_id = inner.get_padding().map(|p| p.pad_id).unwrap_or(0);
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(Self {
            inner,
            pad_id,
            max_length,
        })
    }

    /// The longest sequence (in tokens, special tokens included) this tokenizer produces.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Word-piece ids of each text. Empty or whitespace-only texts are an error naming their index.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        if let Some(index) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(ModelError::EmptyText { index });
        }
        let capped: Vec<&str> = texts.iter().map(|t| cap_text(t)).collect();
        let encodings = self
            .inner
            .encode_batch_fast(capped, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// Whether `word`, as a post writes it, is a whole entry of the vocabulary after the tokenizer's own
    /// normalisation (lower case and no accents for an uncased model): a word common enough in the model's
    /// training text to have a token of its own ("sunset", "reading", "boston"), unlike a rare name
    /// ("Atomium", "Schönbrunn").
    pub fn is_vocabulary_word(&self, word: &str) -> bool {
        let normalised = match self.inner.get_normalizer() {
            Some(normalizer) => {
                let mut text = tokenizers::NormalizedString::from(word);
                if normalizer.normalize(&mut text).is_err() {
                    return false;
                }
                text.get().to_owned()
            }
            None => word.to_owned(),
        };
        self.inner.token_to_id(&normalised).is_some()
    }

    /// Pads `sequences` to the longest of them and puts them on `device`.
    pub fn batch(&self, sequences: &[&[u32]], device: &Device) -> Result<TokenBatch> {
        TokenBatch::pad(sequences, self.pad_id, device)
    }
}

/// Cuts `text` to at most [`MAX_TEXT_BYTES`] bytes on a character boundary.
pub fn cap_text(text: &str) -> &str {
    if text.len() <= MAX_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A padded batch of token sequences, ready for the encoder.
pub struct TokenBatch {
    /// `[B, T]` u32 word-piece ids.
    pub input_ids: Tensor,
    /// `[B, T]` u32, 1 on real tokens and 0 on padding.
    pub attention_mask: Tensor,
}

impl TokenBatch {
    /// Right-pads every sequence with `pad_id` to the longest one.
    pub fn pad(sequences: &[&[u32]], pad_id: u32, device: &Device) -> Result<Self> {
        let width = sequences.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(sequences.len() * width);
        let mut mask = Vec::with_capacity(sequences.len() * width);
        for sequence in sequences {
            ids.extend_from_slice(sequence);
            ids.extend(std::iter::repeat_n(pad_id, width - sequence.len()));
            mask.extend(std::iter::repeat_n(1u32, sequence.len()));
            mask.extend(std::iter::repeat_n(0u32, width - sequence.len()));
        }
        let shape = (sequences.len(), width);
        Ok(Self {
            input_ids: Tensor::from_vec(ids, shape, device)?,
            attention_mask: Tensor::from_vec(mask, shape, device)?,
        })
    }
}

/// Groups item indices into batches of similar length: sorted by length (longest first, so the first batch
/// shows the worst-case memory at once), each batch holding at most `max_items` items and at most
/// `max_tokens` padded tokens (items x longest length). The token budget keeps a batch of long posts from
/// paying for quadratic attention over mostly padding; a single item longer than the budget still gets a
/// batch of its own.
pub fn length_buckets(lengths: &[usize], max_items: usize, max_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for index in order {
        // Sorted longest first: the first member's length is the batch's padded width.
        let width = current
            .first()
            .map_or(lengths[index], |&first| lengths[first]);
        let full = current.len() >= max_items.max(1) || (current.len() + 1) * width > max_tokens;
        if full && !current.is_empty() {
            buckets.push(std::mem::take(&mut current));
        }
        current.push(index);
    }
    if !current.is_empty() {
        buckets.push(current);
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_item_once_and_group_by_length() {
        let lengths = [5, 1, 9, 3, 7, 2, 8];
        let buckets = length_buckets(&lengths, 3, usize::MAX);
        let mut seen: Vec<usize> = buckets.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        assert!(buckets.iter().all(|b| b.len() <= 3));
        assert_eq!(buckets[0], vec![2, 6, 4]);
    }

    #[test]
    fn token_budget_splits_batches_of_long_items() {
        let lengths = [100, 100, 100, 10, 10, 10, 10];
        let buckets = length_buckets(&lengths, 8, 250);
        assert_eq!(buckets, vec![vec![0, 1], vec![2, 3], vec![4, 5, 6]]);
        // An item over the budget on its own still gets a batch.
        assert_eq!(length_buckets(&[500, 5], 8, 100), vec![vec![0], vec![1]]);
    }

    #[test]
    fn cap_text_respects_char_boundaries() {
        let long = "é".repeat(MAX_TEXT_BYTES); // 2 bytes each
        let capped = cap_text(&long);
        assert!(capped.len() <= MAX_TEXT_BYTES);
        assert!(capped.chars().all(|c| c == 'é'));
        assert_eq!(cap_text("short"), "short");
    }

    #[test]
    fn padding_fills_to_longest_and_masks() {
        let batch = TokenBatch::pad(&[&[1, 2, 3], &[4]], 0, &Device::Cpu).unwrap();
        assert_eq!(
            batch.input_ids.to_vec2::<u32>().unwrap(),
            vec![vec![1, 2, 3], vec![4, 0, 0]]
        );
        assert_eq!(
            batch.attention_mask.to_vec2::<u32>().unwrap(),
            vec![vec![1, 1, 1], vec![1, 0, 0]]
        );
    }
}
