//! A prefix in an object store (`file:///dir`, `s3://bucket/prefix`, ...), read and written synchronously.
//!
//! object_store is async; replication runs on plain threads (the publisher inside an ingest, the follower's
//! poll loop), so each [`Remote`] owns a small current-thread tokio runtime and blocks on it.

use std::path::Path as FsPath;

use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::ReplicationError;

/// Environment variables whose prefix names an object store's settings (credentials, endpoint, region):
/// object_store's builders read the keys they know and ignore the rest.
const SETTING_PREFIXES: &[&str] = &["AWS_", "GOOGLE_", "AZURE_"];

/// One URL's prefix in an object store.
pub struct Remote {
    url: String,
    store: Box<dyn ObjectStore>,
    prefix: Path,
    /// Always `Some` until dropped (taken by `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        // A remote may be dropped on an async thread (a server shutting down drops its store there), where
        // a runtime's blocking drop panics; nothing is pending by then, so it is let go in the background.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

impl Remote {
    /// Opens `url`. Credentials and endpoints come from the environment (`AWS_ENDPOINT_URL`, ...), as
    /// every S3 tool reads them.
    pub fn open(url: &str) -> Result<Self, ReplicationError> {
        let parsed = url::Url::parse(url).map_err(|e| ReplicationError::BadUrl {
            url: url.to_string(),
            why: format!(
                "{e}; give an absolute URL such as file:///var/lib/contrastgeo/published or \
                 s3://bucket/prefix"
            ),
        })?;
        let settings =
            std::env::vars().filter(|(key, _)| SETTING_PREFIXES.iter().any(|p| key.starts_with(p)));
        let (store, prefix) = object_store::parse_url_opts(&parsed, settings).map_err(|e| {
            let hint = if parsed.scheme() == "s3" && !cfg!(feature = "s3") {
                " (this build has no S3 client: rebuild with `--features s3`)"
            } else {
                ""
            };
            ReplicationError::BadUrl {
                url: url.to_string(),
                why: format!("{e}{hint}"),
            }
        })?;
        if parsed.scheme() == "file" {
            // LocalFileSystem writes below an existing directory only.
            std::fs::create_dir_all(parsed.path()).map_err(|e| ReplicationError::BadUrl {
                url: url.to_string(),
                why: format!("cannot create the directory: {e}"),
            })?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ReplicationError::BadUrl {
                url: url.to_string(),
                why: format!("cannot start an I/O runtime: {e}"),
            })?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            store,
            prefix,
            runtime: Some(runtime),
        })
    }

    /// The URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> Path {
        let mut path = self.prefix.clone();
        for part in key.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        path
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the remote")
            .block_on(future)
    }

    fn error(&self, key: &str, source: object_store::Error) -> ReplicationError {
        ReplicationError::Remote {
            object: format!("{}/{key}", self.url),
            source,
        }
    }

    /// Writes `bytes` as the object `key` (a whole object appears or none: object stores' puts are atomic).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), ReplicationError> {
        let path = self.path(key);
        self.block_on(self.store.put(&path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.error(key, e))
    }

    /// Uploads a local file as the object `key`.
    pub fn put_file(&self, key: &str, file: &FsPath) -> Result<(), ReplicationError> {
        let bytes = std::fs::read(file).map_err(|source| ReplicationError::Local {
            path: file.to_path_buf(),
            source,
        })?;
        self.put(key, bytes)
    }

    /// The object `key`, or `None` if there is none.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ReplicationError> {
        let path = self.path(key);
        let got = self.block_on(async {
            match self.store.get(&path).await {
                Ok(result) => result.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| self.error(key, e))
    }

    /// The keys below `dir` (relative to this remote's prefix), sorted.
    pub fn list(&self, dir: &str) -> Result<Vec<String>, ReplicationError> {
        let path = self.path(dir);
        let metas: Vec<object_store::ObjectMeta> = self
            .block_on(self.store.list(Some(&path)).try_collect())
            .map_err(|e| self.error(dir, e))?;
        let prefix = self.prefix.as_ref();
        let mut keys: Vec<String> = metas
            .into_iter()
            .map(|meta| {
                let full = meta.location.as_ref();
                full.strip_prefix(prefix)
                    .unwrap_or(full)
                    .trim_start_matches('/')
                    .to_string()
            })
            .collect();
        keys.sort();
        Ok(keys)
    }
}
