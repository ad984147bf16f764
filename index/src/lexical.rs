//! The lexical side of the index: a tantivy (BM25) index of the support posts' words, beside the HNSW graph.
//!
//! A sentence embedding of a post keeps its gist and drops much of its local vocabulary (street names,
//! venues, slang, hashtags); the words themselves find the support posts that share them. The query path
//! asks both sides and fuses what they return (the engine's business, not this crate's).
//!
//! Like the graph, this index is a cache of sled: the support posts in [`Store`] are the truth. Every commit
//! records, as its payload, the highest post id it holds (the *lexical watermark*); post ids only grow, so
//! [`LexicalIndex::catch_up`] indexes exactly the posts above it. A process killed between sled's write and
//! tantivy's commit therefore loses nothing: the next open indexes the missing posts again, and one that
//! finds the directory unreadable starts it afresh from sled. Each write ([`LexicalIndex::add`]) commits and
//! reloads the searcher before it returns, so a post is found by its words as soon as its ingest returns.
//!
//! Documents hold the post id and city id as fast fields and the text indexed only (it is stored in sled), so
//! a hit is read without touching tantivy's document store.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::BooleanQuery;
use tantivy::schema::{Field, Schema, FAST, INDEXED, TEXT};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, Term};

use crate::error::{Result, StoreError};
use crate::records::{CityId, PostId};
use crate::store::Store;

/// Directory of the lexical index inside an index directory.
pub const LEXICAL_DIR: &str = "lexical";

/// tantivy's indexing memory budget (its minimum is 15 MB per thread); one thread, since ingest batches are
/// small and the bulk build is bounded by the encoder, not by tantivy.
const WRITER_MEMORY: usize = 32_000_000;

/// Posts added per commit while catching up with sled.
const CATCH_UP_CHUNK: usize = 4096;

/// Terms of a query beyond this many are ignored (a post is short; this bounds a pathological one).
const MAX_QUERY_TERMS: usize = 256;

/// A support post whose words matched a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LexicalHit {
    /// The support post.
    pub post: PostId,
    /// Its city.
    pub city: CityId,
    /// Its BM25 score for the query.
    pub score: f32,
}

struct Fields {
    text: Field,
    post: Field,
    city: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = builder.add_text_field("text", TEXT);
    let post = builder.add_u64_field("post", INDEXED | FAST);
    let city = builder.add_u64_field("city", FAST);
    (builder.build(), Fields { text, post, city })
}

/// The BM25 index of one index directory's support posts.
pub struct LexicalIndex {
    dir: PathBuf,
    index: Index,
    fields: Fields,
    /// The writer and the watermark of its last commit; one writer per index (tantivy's lock says so).
    writer: Mutex<(IndexWriter, Option<PostId>)>,
    reader: IndexReader,
}

impl std::fmt::Debug for LexicalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LexicalIndex")
            .field("dir", &self.dir)
            .field("posts", &self.len())
            .finish()
    }
}

fn lexical_error(dir: &Path, what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Lexical {
        path: dir.to_path_buf(),
        reason: format!("{what}: {error}"),
    }
}

impl LexicalIndex {
    /// Opens (or creates) the lexical index of the index directory `dir` (in `dir/lexical/`) and indexes the
    /// support posts of `store` it lacks. An index that cannot be opened (a torn or foreign directory) is
    /// removed and rebuilt from `store`.
    pub fn open(dir: &Path, store: &Store) -> Result<Self> {
        let path = dir.join(LEXICAL_DIR);
        let index = match Self::open_at(&path) {
            Ok(index) => index,
            // Another writer holds it (a generation still open elsewhere): refuse, never rebuild under it.
            Err(error @ StoreError::LexicalBusy { .. }) => return Err(error),
            Err(error) => {
                tracing::warn!(%error, "lexical index unusable; rebuilding it from the record store");
                std::fs::remove_dir_all(&path).map_err(|source| StoreError::Io {
                    path: path.clone(),
                    source,
                })?;
                Self::open_at(&path)?
            }
        };
        let added = index.catch_up(store)?;
        if added > 0 {
            tracing::info!(added, dir = %path.display(), "lexical index caught up with the record store");
        }
        Ok(index)
    }

    fn open_at(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (schema, fields) = schema();
        let directory = MmapDirectory::open(path)
            .map_err(|e| lexical_error(path, "opening the directory", e))?;
        let index = Index::open_or_create(directory, schema)
            .map_err(|e| lexical_error(path, "opening the index", e))?;
        let watermark = match index.load_metas() {
            Ok(metas) => parse_watermark(metas.payload.as_deref())
                .map_err(|reason| lexical_error(path, "reading the commit payload", reason))?,
            Err(e) => return Err(lexical_error(path, "reading the index metadata", e)),
        };
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => StoreError::LexicalBusy {
                    path: path.to_path_buf(),
                },
                other => lexical_error(path, "opening the index writer", other),
            })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| lexical_error(path, "opening a reader", e))?;
        Ok(Self {
            dir: path.to_path_buf(),
            index,
            fields,
            writer: Mutex::new((writer, watermark)),
            reader,
        })
    }

    /// The highest post id the index holds (committed), `None` when it holds none.
    pub fn watermark(&self) -> Option<PostId> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner).1
    }

    /// Number of posts indexed.
    pub fn len(&self) -> usize {
        self.reader.searcher().num_docs() as usize
    }

    /// Whether no post is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Indexes the support posts of `store` above the watermark; returns how many.
    pub fn catch_up(&self, store: &Store) -> Result<usize> {
        let mut pending: Vec<(PostId, CityId, String)> = Vec::new();
        let mut added = 0;
        for entry in store.support_posts_after(self.watermark()) {
            let (id, post) = entry?;
            pending.push((id, post.city, post.text));
            if pending.len() == CATCH_UP_CHUNK {
                added += self.add_owned(&pending)?;
                pending.clear();
            }
        }
        added += self.add_owned(&pending)?;
        Ok(added)
    }

    fn add_owned(&self, posts: &[(PostId, CityId, String)]) -> Result<usize> {
        let refs: Vec<(PostId, CityId, &str)> = posts
            .iter()
            .map(|(id, city, text)| (*id, *city, text.as_str()))
            .collect();
        self.add(&refs)
    }

    /// Indexes `(post id, city, text)` triples, commits them with the new watermark and reloads the searcher:
    /// they are found when this returns. Posts at or below the watermark are already indexed and skipped,
    /// so replaying a batch after a crash adds nothing twice. Returns how many were added.
    pub fn add(&self, posts: &[(PostId, CityId, &str)]) -> Result<usize> {
        let mut guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let (writer, watermark) = &mut *guard;
        let fresh: Vec<&(PostId, CityId, &str)> = posts
            .iter()
            .filter(|(id, _, _)| watermark.is_none_or(|w| *id > w))
            .collect();
        let Some(highest) = fresh.iter().map(|(id, _, _)| *id).max() else {
            return Ok(0);
        };
        for &&(post, city, text) in &fresh {
            writer
                .add_document(doc!(
                    self.fields.text => text,
                    self.fields.post => post,
                    self.fields.city => city,
                ))
                .map_err(|e| lexical_error(&self.dir, "adding a post", e))?;
        }
        let mut commit = writer
            .prepare_commit()
            .map_err(|e| lexical_error(&self.dir, "preparing a commit", e))?;
        commit.set_payload(&format_watermark(highest));
        commit
            .commit()
            .map_err(|e| lexical_error(&self.dir, "committing", e))?;
        *watermark = Some(highest);
        self.reader
            .reload()
            .map_err(|e| lexical_error(&self.dir, "reloading the searcher", e))?;
        Ok(fresh.len())
    }

    /// The `limit` support posts whose words best match `text` (BM25 over the words `text` shares with
    /// them), best first; ties by post id. A text without indexable words matches nothing.
    pub fn search(&self, text: &str, limit: usize) -> Result<Vec<LexicalHit>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut analyzer = self
            .index
            .tokenizer_for_field(self.fields.text)
            .map_err(|e| lexical_error(&self.dir, "the text field's tokenizer", e))?;
        let mut terms: Vec<Term> = Vec::new();
        let mut stream = analyzer.token_stream(text);
        while stream.advance() && terms.len() < MAX_QUERY_TERMS {
            terms.push(Term::from_field_text(
                self.fields.text,
                &stream.token().text,
            ));
        }
        terms.sort();
        terms.dedup();
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let query = BooleanQuery::new_multiterms_query(terms);
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(limit).order_by_score())
            .map_err(|e| lexical_error(&self.dir, "searching", e))?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let fast = searcher.segment_reader(address.segment_ord).fast_fields();
            let read = |name: &str| -> Result<u64> {
                fast.u64(name)
                    .map_err(|e| lexical_error(&self.dir, "reading a fast field", e))?
                    .first(address.doc_id)
                    .ok_or_else(|| lexical_error(&self.dir, "a hit", format!("no {name} field")))
            };
            hits.push(LexicalHit {
                post: read("post")?,
                city: read("city")?,
                score,
            });
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.post.cmp(&b.post)));
        Ok(hits)
    }
}

fn format_watermark(post: PostId) -> String {
    format!("watermark={post}")
}

fn parse_watermark(payload: Option<&str>) -> std::result::Result<Option<PostId>, String> {
    match payload {
        None => Ok(None),
        Some(text) => text
            .strip_prefix("watermark=")
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("unexpected payload {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::SupportPost;

    fn post(city: CityId, text: &str) -> SupportPost {
        SupportPost {
            text: text.into(),
            city,
            source: "test".into(),
        }
    }

    #[test]
    fn posts_are_found_by_their_words_at_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .add_support_posts(&[
                post(1, "Brunch on Rainey Street before the Longhorns game"),
                post(2, "Deep dish at Lou Malnati's then the Cubs at Wrigley"),
            ])
            .unwrap();
        let lexical = LexicalIndex::open(dir.path(), &store).unwrap();
        assert_eq!(lexical.len(), 2, "caught up with sled on open");
        let hits = lexical.search("wrigley field tonight!", 5).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].post, hits[0].city), (2, 2), "post ids start at 1");
        assert!(lexical.search("¿¡ --- !?", 5).unwrap().is_empty());

        // A post added later is found as soon as add returns; adding it again adds nothing.
        let ids = store
            .add_support_posts(&[post(3, "Sixth Street crawl, then tacos")])
            .unwrap();
        let added = lexical
            .add(&[(ids[0], 3, "Sixth Street crawl, then tacos")])
            .unwrap();
        assert_eq!(added, 1);
        assert_eq!(lexical.search("tacos", 3).unwrap()[0].city, 3);
        assert_eq!(
            lexical
                .add(&[(ids[0], 3, "Sixth Street crawl, then tacos")])
                .unwrap(),
            0
        );
        assert_eq!(lexical.watermark(), Some(ids[0]));
        drop(lexical);

        let reopened = LexicalIndex::open(dir.path(), &store).unwrap();
        assert_eq!(reopened.len(), 3);
        assert_eq!(reopened.watermark(), Some(3));
    }

    #[test]
    fn posts_sled_holds_but_the_index_missed_are_indexed_on_open_and_a_torn_index_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .add_support_posts(&[post(1, "Ferry to Fremantle")])
            .unwrap();
        drop(LexicalIndex::open(dir.path(), &store).unwrap());
        // Written to sled while no lexical index was open (a crash between the two writes).
        store
            .add_support_posts(&[post(2, "Cottesloe sunset swim")])
            .unwrap();
        let lexical = LexicalIndex::open(dir.path(), &store).unwrap();
        assert_eq!(lexical.search("cottesloe", 1).unwrap()[0].city, 2);
        drop(lexical);

        // A garbled meta.json: the index is rebuilt from sled rather than refusing to open.
        std::fs::write(dir.path().join(LEXICAL_DIR).join("meta.json"), b"{not json").unwrap();
        let rebuilt = LexicalIndex::open(dir.path(), &store).unwrap();
        assert_eq!(rebuilt.len(), 2);
        assert_eq!(rebuilt.search("fremantle ferry", 2).unwrap()[0].post, 1);
    }

    #[test]
    fn an_index_another_writer_holds_is_refused_not_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .add_support_posts(&[post(1, "Ferry to Fremantle")])
            .unwrap();
        let held = LexicalIndex::open(dir.path(), &store).unwrap();
        let second = LexicalIndex::open(dir.path(), &store);
        assert!(
            matches!(second, Err(StoreError::LexicalBusy { .. })),
            "{second:?}"
        );
        assert_eq!(
            held.search("fremantle", 1).unwrap().len(),
            1,
            "left as it was"
        );
    }

    #[test]
    fn more_shared_words_rank_higher() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .add_support_posts(&[
                post(1, "coffee downtown"),
                post(2, "coffee at the Pike Place market downtown"),
                post(3, "market day"),
            ])
            .unwrap();
        let lexical = LexicalIndex::open(dir.path(), &store).unwrap();
        let hits = lexical.search("Pike Place market coffee", 10).unwrap();
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[0].city, 2);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
}
