//! The image cache: content-addressed blobs under `images/blobs/sha256/` (shared by every
//! image: a layer common to two images is stored once) and the image index in `db/images.db`.
//!
//! Blobs are written to `images/tmp/` and renamed into place only after their digest was
//! checked, so a crash or a failed pull never leaves a partial blob where a complete one is
//! expected, and two processes writing the same blob end with one correct copy. A pull holds
//! `images/gc.lock` shared and garbage collection holds it exclusive, so collection never
//! deletes a blob a pull in progress has just stored.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use tempfile::NamedTempFile;

use crate::error::{Error, IoContext, Result};
use crate::image::layout;

/// Partial downloads older than this are from a process that died; they are deleted.
const STALE_PARTIAL: Duration = Duration::from_secs(6 * 3600);

/// Blobs by digest, under `root/blobs/sha256/`.
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// `root` is `BOXLITE_HOME/images`.
    pub fn new(root: &Path) -> Result<BlobStore> {
        for sub in ["blobs/sha256", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
        }
        let store = BlobStore {
            root: root.to_owned(),
        };
        store.remove_stale_partials();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// The path of a blob (which may not exist). `digest` must be a checked sha256 digest.
    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        layout::blob_path(&self.root, digest)
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.is_file())
    }

    /// A new, empty download file in `images/tmp/` (deleted if dropped uncommitted).
    pub fn new_partial(&self) -> std::io::Result<NamedTempFile> {
        tempfile::Builder::new()
            .prefix("blob-")
            .suffix(".partial")
            .tempfile_in(self.root.join("tmp"))
    }

    /// Moves a verified download into place. If another process stored the same blob first,
    /// its copy (identical, by its name) stays.
    pub fn commit(&self, partial: NamedTempFile, digest: &str) -> std::io::Result<()> {
        let target = self
            .path(digest)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        partial.persist(&target).map_err(|e| e.error)?;
        Ok(())
    }

    /// Stores small content (manifests, indexes) whose digest the caller has checked.
    pub fn put_bytes(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        if self.contains(digest) {
            return Ok(());
        }
        use std::io::Write as _;
        let mut partial = self.new_partial()?;
        partial.write_all(bytes)?;
        partial.as_file().sync_all()?;
        self.commit(partial, digest)
    }

    /// Every stored digest.
    pub fn digests(&self) -> Result<Vec<String>> {
        let dir = self.blobs_dir();
        let entries = fs::read_dir(&dir).context(|| format!("read {}", dir.display()))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(|n| format!("sha256:{n}")))
            .filter(|d| layout::check_digest(d).is_ok())
            .collect())
    }

    fn remove_stale_partials(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with("blob-") && name.ends_with(".partial")) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_PARTIAL);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// One cached image, as `runtime.images.list()` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRecord {
    /// Canonical reference: `docker.io/library/python:slim`.
    pub reference: String,
    pub repository: String,
    /// The platform manifest the image runs from.
    pub manifest_digest: String,
    /// The multi-platform index it was selected from, if any.
    pub index_digest: Option<String>,
    pub config_digest: String,
    pub layers: Vec<String>,
    /// Compressed size of config and layers, in bytes.
    pub size: u64,
    /// Where it came from: a registry or mirror URL, or `docker-archive:<path>`.
    pub source: String,
    pub pulled_at: String,
}

/// The image index in `db/images.db` (SQLite). Each call opens its own connection: cheap,
/// and safe across threads and processes (WAL, busy timeout).
pub struct ImageDb {
    path: PathBuf,
}

fn db_error(path: &Path, e: rusqlite::Error) -> Error {
    crate::sqlite::error("image index", path, e)
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS images (
                reference TEXT PRIMARY KEY,
                repository TEXT NOT NULL,
                manifest_digest TEXT NOT NULL,
                index_digest TEXT,
                config_digest TEXT NOT NULL,
                layers TEXT NOT NULL,
                size INTEGER NOT NULL,
                source TEXT NOT NULL,
                pulled_at TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS images_by_manifest ON images(manifest_digest);";

impl ImageDb {
    pub fn open(path: PathBuf) -> Result<ImageDb> {
        let db = ImageDb { path };
        crate::sqlite::create(&db.path, SCHEMA).map_err(|e| db_error(&db.path, e))?;
        Ok(db)
    }

    fn connect(&self) -> Result<Connection> {
        crate::sqlite::connect(&self.path).map_err(|e| db_error(&self.path, e))
    }

    pub fn put(&self, record: &ImageRecord) -> Result<()> {
        let conn = self.connect()?;
        conn.execute(
            "INSERT OR REPLACE INTO images
             (reference, repository, manifest_digest, index_digest, config_digest, layers, size, source, pulled_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                record.reference,
                record.repository,
                record.manifest_digest,
                record.index_digest,
                record.config_digest,
                serde_json::to_string(&record.layers).expect("layers serialise"),
                record.size as i64,
                record.source,
                record.pulled_at,
            ],
        )
        .map_err(|e| db_error(&self.path, e))?;
        Ok(())
    }

    fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRecord> {
        let layers: String = row.get(5)?;
        Ok(ImageRecord {
            reference: row.get(0)?,
            repository: row.get(1)?,
            manifest_digest: row.get(2)?,
            index_digest: row.get(3)?,
            config_digest: row.get(4)?,
            layers: serde_json::from_str(&layers).unwrap_or_default(),
            size: row.get::<_, i64>(6)? as u64,
            source: row.get(7)?,
            pulled_at: row.get(8)?,
        })
    }

    const COLUMNS: &'static str = "reference, repository, manifest_digest, index_digest, config_digest, layers, size, source, pulled_at";

    pub fn get(&self, reference: &str) -> Result<Option<ImageRecord>> {
        let conn = self.connect()?;
        conn.query_row(
            &format!("SELECT {} FROM images WHERE reference = ?1", Self::COLUMNS),
            params![reference],
            Self::row,
        )
        .optional()
        .map_err(|e| db_error(&self.path, e))
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM images ORDER BY reference",
                Self::COLUMNS
            ))
            .map_err(|e| db_error(&self.path, e))?;
        let rows = stmt
            .query_map([], Self::row)
            .map_err(|e| db_error(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| db_error(&self.path, e))
    }

    /// Deletes the entry; true if there was one.
    pub fn remove(&self, reference: &str) -> Result<bool> {
        let conn = self.connect()?;
        let n = conn
            .execute(
                "DELETE FROM images WHERE reference = ?1",
                params![reference],
            )
            .map_err(|e| db_error(&self.path, e))?;
        Ok(n > 0)
    }
}

/// Held shared by pulls and exclusive by garbage collection.
pub struct GcLock(#[allow(dead_code)] File);

impl GcLock {
    fn open(root: &Path) -> Result<File> {
        let path = root.join("gc.lock");
        File::create(&path).context(|| format!("create {}", path.display()))
    }

    pub fn shared(root: &Path) -> Result<GcLock> {
        let file = Self::open(root)?;
        file.lock_shared()
            .context(|| format!("lock {}", root.join("gc.lock").display()))?;
        Ok(GcLock(file))
    }

    /// The exclusive lock if nobody holds the lock now (no pull, import or collection runs).
    pub fn try_exclusive(root: &Path) -> Option<GcLock> {
        let file = Self::open(root).ok()?;
        file.try_lock().ok()?;
        Some(GcLock(file))
    }

    pub fn exclusive(root: &Path) -> Result<GcLock> {
        let file = Self::open(root)?;
        file.lock()
            .context(|| format!("lock {}", root.join("gc.lock").display()))?;
        Ok(GcLock(file))
    }
}

/// Deletes the stored blobs not in `keep` that no cached image references; returns how many.
/// The caller holds the exclusive [`GcLock`].
pub fn discard_unreferenced(
    store: &BlobStore,
    db: &ImageDb,
    keep: &HashSet<String>,
) -> Result<usize> {
    let referenced = referenced_digests(&db.list()?);
    let mut removed = 0;
    for digest in store.digests()? {
        if keep.contains(&digest) || referenced.contains(&digest) {
            continue;
        }
        if fs::remove_file(store.path(&digest)?).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

fn referenced_digests(images: &[ImageRecord]) -> HashSet<String> {
    let mut keep: HashSet<String> = HashSet::new();
    for image in images {
        keep.insert(image.manifest_digest.clone());
        keep.insert(image.config_digest.clone());
        keep.extend(image.index_digest.iter().cloned());
        keep.extend(image.layers.iter().cloned());
    }
    keep
}

/// What garbage collection removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub disks_removed: usize,
    pub bytes_freed: u64,
}

/// Deletes blobs no cached image references and base disks (`disks/<digest>.ext4`) that
/// neither a cached image nor a box (`keep_disks`, manifest digests) uses. The caller holds
/// the exclusive [`GcLock`].
pub fn collect_garbage(
    store: &BlobStore,
    db: &ImageDb,
    keep_disks: &HashSet<String>,
) -> Result<GcReport> {
    let keep = referenced_digests(&db.list()?);
    let mut report = GcReport::default();
    for digest in store.digests()? {
        if keep.contains(&digest) {
            continue;
        }
        let path = store.path(&digest)?;
        let size = crate::image::disk_usage(&path);
        if fs::remove_file(&path).is_ok() {
            report.blobs_removed += 1;
            report.bytes_freed += size;
        }
    }
    let disks = store.root().join("disks");
    if let Ok(entries) = fs::read_dir(&disks) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(key) = name.strip_suffix(".ext4") else {
                continue;
            };
            // `sha256-<hex>` or `sha256-<hex>-<N>g` (a box's disk_size_gb).
            let digest = key
                .replacen('-', ":", 1)
                .split('-')
                .next()
                .unwrap_or_default()
                .to_owned();
            if keep.contains(&digest) || keep_disks.contains(&digest) {
                continue;
            }
            let size = crate::image::disk_usage(&entry.path());
            if fs::remove_file(entry.path()).is_ok() {
                let _ = fs::remove_file(disks.join(format!("{key}.lock")));
                report.disks_removed += 1;
                report.bytes_freed += size;
            }
        }
    }
    tracing::info!(?report, "image garbage collection");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn digest_of(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    #[test]
    fn blobs_are_stored_once_and_collected_when_unreferenced() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path()).unwrap();
        let db = ImageDb::open(dir.path().join("images.db")).unwrap();
        let (a, b) = (b"layer a".as_slice(), b"layer b".as_slice());
        let (da, db_) = (digest_of(a), digest_of(b));
        store.put_bytes(&da, a).unwrap();
        store.put_bytes(&da, a).unwrap();
        store.put_bytes(&db_, b).unwrap();
        assert_eq!(store.digests().unwrap().len(), 2);
        db.put(&ImageRecord {
            reference: "docker.io/library/x:1".into(),
            repository: "library/x".into(),
            manifest_digest: da.clone(),
            index_digest: None,
            config_digest: da.clone(),
            layers: vec![da.clone()],
            size: 7,
            source: "test".into(),
            pulled_at: "now".into(),
        })
        .unwrap();
        let report = collect_garbage(&store, &db, &HashSet::new()).unwrap();
        assert_eq!(report.blobs_removed, 1);
        assert!(store.contains(&da) && !store.contains(&db_));
        assert!(db.remove("docker.io/library/x:1").unwrap());
        assert!(db.list().unwrap().is_empty());
    }
}
