//! Graph dumps: the HNSW graph saved beside the sled database so that start-up need not rebuild it.
//!
//! A dump is the directory `dir/graph/` holding hnsw_rs's two files (`<basename>.hnsw.graph` and
//! `<basename>.hnsw.data`) and `manifest.json`, a [`DumpManifest`] with the format version, the
//! model version, the dimension, the watermark (highest vector id in the graph) and the size and
//! CRC-32 of each hnsw file.
//!
//! Writing: hnsw_rs dumps into `dir/graph.tmp/`, the files are fsynced, the manifest is written
//! last, then `graph` is renamed to `graph.old`, `graph.tmp` to `graph`, and `graph.old` removed. A
//! crash leaves either the old dump, the new one, or (between the two renames) `graph.old`, which
//! the next open puts back. Never a mix of the two.
//!
//! Reading checks everything before handing the files to hnsw_rs, whose loader asserts, panics
//! and even calls `process::exit` on malformed input: a missing or unparsable manifest, another
//! format or model version, another dimension or HNSW parameters, a watermark from the future or a
//! checksum mismatch all make the dump unusable ([`StoreError::UnusableDump`]) and the index
//! rebuilds the graph from sled instead.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use hnsw_rs::prelude::{AnnT, HnswIo};
use serde::{Deserialize, Serialize};

use crate::ann::{AnnIndex, DotDistance, Graph, IndexOptions};
use crate::error::{Result, StoreError};
use crate::records::VectorId;

/// Version of the dump layout this crate writes and reads.
pub const DUMP_FORMAT_VERSION: u32 = 1;

const GRAPH_DIR: &str = "graph";
const GRAPH_TMP_DIR: &str = "graph.tmp";
const GRAPH_OLD_DIR: &str = "graph.old";
const MANIFEST: &str = "manifest.json";
const BASENAME: &str = "contrastgeo";
const DISTANCE: &str = "DotDistance";

/// The footer of a dump, `graph/manifest.json`, written after the graph files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DumpManifest {
    /// [`DUMP_FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Version of the model whose embeddings the graph indexes.
    pub model_version: String,
    /// Dimension of the vectors.
    pub dimension: usize,
    /// Highest vector id in the graph: stored vectors above it were added after the dump.
    pub watermark: VectorId,
    /// Points in the graph, removed vectors included.
    pub graph_points: usize,
    /// Name of the graph's distance.
    pub distance: String,
    /// Parameters the graph was built with.
    pub options: IndexOptions,
    /// hnsw_rs's basename of the two graph files.
    pub basename: String,
    /// The graph files with their size and checksum.
    pub files: Vec<DumpFile>,
}

/// One file of a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpFile {
    /// File name inside the dump directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the contents.
    pub crc32: u32,
}

/// What a dump must match to be loaded.
pub(crate) struct DumpExpectation<'a> {
    /// The store's model version.
    pub model_version: &'a str,
    /// The store's dimension.
    pub dimension: usize,
    /// The store's next vector id: a dump cannot contain an id not yet handed out.
    pub next_vector_id: VectorId,
    /// The configured HNSW parameters.
    pub options: IndexOptions,
}

/// The dump directory of the index directory `dir`.
pub fn graph_dir(dir: &Path) -> PathBuf {
    dir.join(GRAPH_DIR)
}

/// Writes `index` as the dump of `dir`, replacing the previous one atomically. Returns `None`, and
/// removes any old dump, when the graph is empty (hnsw_rs cannot dump an empty graph, and there is
/// nothing to save). The caller must keep inserts out while this runs, so that the watermark
/// matches the points written.
pub(crate) fn write_dump(
    dir: &Path,
    index: &AnnIndex,
    model_version: &str,
) -> Result<Option<DumpManifest>> {
    let Some(dimension) = index.dimension() else {
        remove_dump(dir)?;
        return Ok(None);
    };
    let tmp = dir.join(GRAPH_TMP_DIR);
    remove_dir_if_present(&tmp)?;
    fs::create_dir_all(&tmp).map_err(io_error(&tmp))?;
    let watermark = index.watermark();
    let graph_points = index.graph_points();
    let dumped = catch_unwind(AssertUnwindSafe(|| index.graph().file_dump(&tmp, BASENAME)));
    let basename = match dumped {
        Ok(Ok(basename)) => basename,
        Ok(Err(error)) => return Err(dump_failed(&tmp, error.to_string())),
        Err(_) => return Err(dump_failed(&tmp, "hnsw_rs panicked while dumping".into())),
    };
    let mut files = Vec::new();
    for suffix in ["hnsw.graph", "hnsw.data"] {
        let name = format!("{basename}.{suffix}");
        let path = tmp.join(&name);
        File::open(&path)
            .and_then(|file| file.sync_all())
            .map_err(io_error(&path))?;
        let (bytes, crc32) = checksum(&path)?;
        files.push(DumpFile { name, bytes, crc32 });
    }
    let manifest = DumpManifest {
        format_version: DUMP_FORMAT_VERSION,
        model_version: model_version.to_string(),
        dimension,
        watermark,
        graph_points,
        distance: DISTANCE.to_string(),
        options: index.options(),
        basename,
        files,
    };
    let manifest_path = tmp.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::Encode {
        what: "dump manifest",
        reason: e.to_string(),
    })?;
    File::create(&manifest_path)
        .and_then(|mut file| {
            file.write_all(&json)?;
            file.sync_all()
        })
        .map_err(io_error(&manifest_path))?;
    sync_dir(&tmp);

    let live = graph_dir(dir);
    let old = dir.join(GRAPH_OLD_DIR);
    remove_dir_if_present(&old)?;
    if live.exists() {
        fs::rename(&live, &old).map_err(io_error(&live))?;
    }
    fs::rename(&tmp, &live).map_err(io_error(&tmp))?;
    sync_dir(dir);
    if let Err(error) = fs::remove_dir_all(&old) {
        if old.exists() {
            tracing::warn!(path = %old.display(), %error, "could not remove the previous graph dump");
        }
    }
    tracing::info!(
        path = %live.display(),
        watermark,
        graph_points,
        "dumped the HNSW graph"
    );
    Ok(Some(manifest))
}

/// Removes the dump of `dir`, if any.
pub(crate) fn remove_dump(dir: &Path) -> Result<()> {
    remove_dir_if_present(&graph_dir(dir))
}

/// Finishes or discards a dump interrupted by a crash: a half-written `graph.tmp` is removed, and a
/// `graph.old` left between the two renames becomes the dump again.
pub(crate) fn recover_interrupted_dump(dir: &Path) -> Result<()> {
    remove_dir_if_present(&dir.join(GRAPH_TMP_DIR))?;
    let old = dir.join(GRAPH_OLD_DIR);
    if old.exists() {
        let live = graph_dir(dir);
        if live.exists() {
            remove_dir_if_present(&old)?;
        } else {
            tracing::info!(path = %old.display(), "restoring the graph dump of an interrupted swap");
            fs::rename(&old, &live).map_err(io_error(&old))?;
        }
    }
    Ok(())
}

/// Reads and checks the dump of `dir` and loads its graph. Every problem with the dump itself is
/// [`StoreError::UnusableDump`].
pub(crate) fn load_graph(
    dir: &Path,
    expected: &DumpExpectation<'_>,
) -> Result<(Graph, DumpManifest)> {
    let graph_path = graph_dir(dir);
    let unusable = |reason: String| StoreError::UnusableDump {
        path: graph_path.clone(),
        reason,
    };
    let manifest_path = graph_path.join(MANIFEST);
    let json = match fs::read(&manifest_path) {
        Ok(json) => json,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(unusable("there is no dump (no manifest.json)".into()))
        }
        Err(error) => return Err(unusable(format!("cannot read manifest.json: {error}"))),
    };
    let manifest: DumpManifest = serde_json::from_slice(&json)
        .map_err(|e| unusable(format!("manifest.json is not a valid manifest: {e}")))?;
    check_manifest(&manifest, expected).map_err(unusable)?;
    for file in &manifest.files {
        let path = graph_path.join(&file.name);
        let (bytes, crc32) = checksum(&path).map_err(|e| unusable(e.to_string()))?;
        if (bytes, crc32) != (file.bytes, file.crc32) {
            return Err(unusable(format!(
                "checksum mismatch on {}: {bytes} bytes with CRC-32 {crc32:08x}, manifest says \
                 {} bytes with {:08x}",
                file.name, file.bytes, file.crc32
            )));
        }
    }
    // hnsw_rs's loaded graph borrows the `HnswIo` that loaded it (`Hnsw<'b>` with `'io: 'b`),
    // because with memory-mapping enabled the points would point into the io's mapping. We load
    // without mmap, so every point owns its vector and the borrow is nominal, but the type system
    // still ties the graph's lifetime to the io. Leaking the io (a path, a name and an `Arc`
    // counter, ~100 bytes, once per successful load) gives a `&'static mut HnswIo` and so a
    // `'static` graph, with no unsafe code and no self-referential struct whose drop order would
    // have to be right.
    let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&graph_path, &manifest.basename)));
    let load = move || {
        let io = io; // moved in, so the graph may borrow it for 'static
        io.load_hnsw::<f32, DotDistance>()
    };
    let graph: Graph = match catch_unwind(AssertUnwindSafe(load)) {
        Ok(Ok(graph)) => graph,
        Ok(Err(error)) => return Err(unusable(format!("hnsw_rs cannot load it: {error}"))),
        Err(_) => return Err(unusable("hnsw_rs panicked while loading it".into())),
    };
    if graph.get_nb_point() != manifest.graph_points {
        return Err(unusable(format!(
            "the graph has {} points, the manifest says {}",
            graph.get_nb_point(),
            manifest.graph_points
        )));
    }
    let loaded_dimension = graph.get_point_indexation().get_data_dimension();
    if loaded_dimension != manifest.dimension {
        return Err(unusable(format!(
            "the graph holds {loaded_dimension}-dimensional vectors, the manifest says {}",
            manifest.dimension
        )));
    }
    Ok((graph, manifest))
}

fn check_manifest(
    manifest: &DumpManifest,
    expected: &DumpExpectation<'_>,
) -> std::result::Result<(), String> {
    if manifest.format_version != DUMP_FORMAT_VERSION {
        return Err(format!(
            "dump format version {} (this build reads {DUMP_FORMAT_VERSION})",
            manifest.format_version
        ));
    }
    if manifest.model_version != expected.model_version {
        return Err(format!(
            "the dump indexes model `{}`, the store holds model `{}`",
            manifest.model_version, expected.model_version
        ));
    }
    if manifest.dimension != expected.dimension {
        return Err(format!(
            "the dump holds {}-dimensional vectors, the store {}",
            manifest.dimension, expected.dimension
        ));
    }
    if manifest.distance != DISTANCE {
        return Err(format!("the dump uses distance {}", manifest.distance));
    }
    if manifest.options.max_nb_connection != expected.options.max_nb_connection
        || manifest.options.ef_construction != expected.options.ef_construction
    {
        return Err(format!(
            "the dump was built with max_nb_connection {} and ef_construction {}, the \
             configuration asks for {} and {}",
            manifest.options.max_nb_connection,
            manifest.options.ef_construction,
            expected.options.max_nb_connection,
            expected.options.ef_construction
        ));
    }
    if manifest.watermark >= expected.next_vector_id {
        return Err(format!(
            "the dump's watermark {} is beyond the store's last vector id {}: the dump is newer \
             than the records",
            manifest.watermark,
            expected.next_vector_id.saturating_sub(1)
        ));
    }
    let expected_files = [
        format!("{}.hnsw.graph", manifest.basename),
        format!("{}.hnsw.data", manifest.basename),
    ];
    let listed: Vec<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    if listed
        != expected_files
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    {
        return Err(format!("the manifest lists unexpected files {listed:?}"));
    }
    Ok(())
}

/// Size and CRC-32 of a file.
fn checksum(path: &Path) -> Result<(u64, u32)> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(io_error(path))?;
        if read == 0 {
            return Ok((bytes, hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
}

fn remove_dir_if_present(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// fsyncs a directory so that renames and new entries in it are durable. Best effort: not every
/// platform lets a directory be opened.
fn sync_dir(path: &Path) {
    if let Err(error) = File::open(path).and_then(|dir| dir.sync_all()) {
        tracing::debug!(path = %path.display(), %error, "could not fsync directory");
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn dump_failed(path: &Path, reason: String) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(reason),
    }
}
