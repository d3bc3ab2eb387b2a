//! Images: resolving a box's image to a prepared, cached, read-only base disk.
//!
//! One base disk per image manifest digest, built once (under a file lock, so concurrent
//! processes build it once too) and shared by every box of that image through qcow2 overlays.

pub mod docker_archive;
pub mod ext4;
pub mod layout;
pub mod metadata;
pub mod registry;
pub mod store;
pub mod unpack;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufReader, Seek as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use layout::{Compression, ResolvedImage, VerifyingReader};
use registry::{Progress, Puller, RegistryOptions};
use store::{BlobStore, GcLock, GcReport, ImageDb, ImageRecord};
pub use unpack::ImageLimits;

/// What a box needs from its image at run time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreparedImage {
    /// What the user asked for (reference or layout path).
    pub reference: String,
    pub manifest_digest: String,
    pub base_disk: PathBuf,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

pub struct ImageStore {
    root: PathBuf,
    blobs: Arc<BlobStore>,
    db: ImageDb,
    registry: RegistryOptions,
    limits: ImageLimits,
}

fn image_error(image: &str, reason: impl Into<String>) -> Error {
    Error::Image {
        image: image.to_owned(),
        reason: reason.into(),
    }
}

/// What `image=` names: an OCI layout on disk or a registry reference.
enum ImageSource {
    Layout(PathBuf, Option<String>),
    /// A `docker save` archive (a file).
    Archive(PathBuf),
    Reference(oci_client::Reference),
}

fn looks_like_path(spec: &str) -> bool {
    spec.starts_with('/')
        || spec.starts_with("./")
        || spec.starts_with("../")
        || spec.starts_with('~')
}

fn classify(spec: &str, rootfs_path: bool) -> Result<ImageSource> {
    if Path::new(spec).is_file() {
        return Ok(ImageSource::Archive(PathBuf::from(spec)));
    }
    let (path, tag) = layout::split_layout_reference(spec);
    if rootfs_path || layout::is_layout(&path) || looks_like_path(spec) {
        return Ok(ImageSource::Layout(path, tag));
    }
    match registry::parse_reference(spec) {
        Ok(r) => Ok(ImageSource::Reference(r)),
        Err(e) => Err(image_error(spec, e.to_string())),
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl ImageStore {
    /// `root` is `BOXLITE_HOME/images`; the index lives in `db_path` (`db/images.db`).
    pub fn new(
        root: PathBuf,
        db_path: PathBuf,
        registry: RegistryOptions,
        limits: ImageLimits,
    ) -> Result<ImageStore> {
        for sub in ["disks", "tmp"] {
            fs::create_dir_all(root.join(sub))
                .context(|| format!("create {}", root.join(sub).display()))?;
        }
        if let Some(parent) = db_path.parent() {
            fs::create_dir_all(parent).context(|| format!("create {}", parent.display()))?;
        }
        Ok(ImageStore {
            blobs: Arc::new(BlobStore::new(&root)?),
            db: ImageDb::open(db_path)?,
            root,
            registry,
            limits,
        })
    }

    /// After a failed pull or import: deletes the blobs it stored (those not in `before`) that
    /// no cached image references, if no other pull holds the cache (else `prune()` will).
    fn discard_new_blobs(&self, before: &HashSet<String>) {
        let Some(_gc) = GcLock::try_exclusive(&self.root) else {
            return;
        };
        match store::discard_unreferenced(&self.blobs, &self.db, before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(blobs = n, "removed the blobs of a failed pull or import"),
            Err(e) => {
                tracing::warn!(error = %e, "could not remove the blobs of a failed pull or import")
            }
        }
    }

    fn blob_snapshot(&self) -> HashSet<String> {
        self.blobs
            .digests()
            .unwrap_or_default()
            .into_iter()
            .collect()
    }

    /// Pulls `reference` from its mirrors or registry into the cache (again, if it is cached:
    /// a tag may have moved) and records it in the index.
    pub async fn pull(&self, reference: &str, progress: Progress) -> Result<ImageRecord> {
        let parsed = registry::parse_reference(reference)
            .map_err(|e| image_error(reference, e.to_string()))?;
        let root = self.root.clone();
        let gc = tokio::task::spawn_blocking(move || GcLock::shared(&root))
            .await
            .map_err(|e| image_error(reference, e.to_string()))??;
        let before = self.blob_snapshot();
        let puller = Puller::new(self.registry.clone(), self.blobs.clone(), self.limits);
        let started = Instant::now();
        let pulled = match puller.pull(&parsed, &progress).await {
            Ok(pulled) => pulled,
            Err(reason) => {
                drop(gc);
                self.discard_new_blobs(&before);
                return Err(image_error(reference, reason.to_string()));
            }
        };
        let _gc = gc;
        let record = ImageRecord {
            reference: pulled.reference,
            repository: parsed.repository().to_owned(),
            manifest_digest: pulled.manifest_digest,
            index_digest: pulled.index_digest,
            config_digest: pulled.config_digest,
            layers: pulled.layer_digests,
            size: pulled.size,
            source: pulled.source,
            pulled_at: now_rfc3339(),
        };
        self.db.put(&record)?;
        tracing::info!(image = %record.reference, digest = %record.manifest_digest, source = %record.source, elapsed_ms = started.elapsed().as_millis() as u64, "pulled image");
        Ok(record)
    }

    /// The cached record of `reference` whose blobs are all present, if any.
    fn cached(&self, reference: &oci_client::Reference) -> Result<Option<ImageRecord>> {
        let Some(record) = self.db.get(&registry::canonical(reference))? else {
            return Ok(None);
        };
        // A digest-pinned reference only ever resolves to content with that digest.
        if let Some(pinned) = reference.digest() {
            if record.manifest_digest != pinned && record.index_digest.as_deref() != Some(pinned) {
                tracing::warn!(reference = %record.reference, manifest = %record.manifest_digest, "a cached record does not match its pinned digest; ignoring it");
                return Ok(None);
            }
        }
        let complete = std::iter::once(&record.manifest_digest)
            .chain(std::iter::once(&record.config_digest))
            .chain(record.layers.iter())
            .all(|d| self.blobs.contains(d));
        Ok(complete.then_some(record))
    }

    /// Makes sure a registry image named by `image=` is in the cache (pulling it if not).
    /// Layout paths need nothing.
    pub async fn ensure(&self, image: Option<&str>, rootfs_path: Option<&str>) -> Result<()> {
        let Some(spec) = rootfs_path.is_none().then_some(image).flatten() else {
            return Ok(());
        };
        if let ImageSource::Reference(r) = classify(spec, false)? {
            let root = self.root.clone();
            let _gc = tokio::task::spawn_blocking(move || GcLock::shared(&root))
                .await
                .map_err(|e| image_error(spec, e.to_string()))??;
            if self.cached(&r)?.is_some() {
                return Ok(());
            }
            drop(_gc);
            self.pull(spec, None).await?;
        }
        Ok(())
    }

    /// Whether creating a box from `image` (see [`ImageStore::ensure`]) would pull it first:
    /// `true` for a registry reference the cache lacks, `false` for layouts and archives.
    pub fn needs_pull(&self, image: Option<&str>, rootfs_path: Option<&str>) -> Result<bool> {
        let Some(spec) = rootfs_path.is_none().then_some(image).flatten() else {
            return Ok(false);
        };
        match classify(spec, false)? {
            ImageSource::Reference(r) => Ok(self.cached(&r)?.is_none()),
            _ => Ok(false),
        }
    }

    /// Every cached image.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        self.db.list()
    }

    /// Forgets `reference` and deletes what only it used (blobs; base disks no box uses).
    pub fn remove(&self, reference: &str, keep_disks: &HashSet<String>) -> Result<GcReport> {
        let parsed = registry::parse_reference(reference)
            .map_err(|e| image_error(reference, e.to_string()))?;
        let _gc = GcLock::exclusive(&self.root)?;
        if !self.db.remove(&registry::canonical(&parsed))? {
            return Err(image_error(
                reference,
                format!(
                    "not in the image cache (as {}); runtime.images.list() shows what is",
                    registry::canonical(&parsed)
                ),
            ));
        }
        store::collect_garbage(&self.blobs, &self.db, keep_disks)
    }

    /// Deletes blobs no cached image references and base disks neither an image nor a box
    /// (`keep_disks`: manifest digests) uses.
    pub fn collect_garbage(&self, keep_disks: &HashSet<String>) -> Result<GcReport> {
        let _gc = GcLock::exclusive(&self.root)?;
        store::collect_garbage(&self.blobs, &self.db, keep_disks)
    }

    /// Imports a `docker save` archive into the cache; `reference` names its single image.
    pub fn import_archive(&self, path: &Path, reference: Option<&str>) -> Result<Vec<ImageRecord>> {
        let spec = path.display().to_string();
        let gc = GcLock::shared(&self.root)?;
        let before = self.blob_snapshot();
        let records = match docker_archive::import(&self.blobs, &self.db, path, reference) {
            Ok(records) => records,
            Err(reason) => {
                drop(gc);
                self.discard_new_blobs(&before);
                return Err(image_error(&spec, reason.to_string()));
            }
        };
        tracing::info!(archive = %spec, images = records.len(), "imported a docker archive");
        Ok(records)
    }

    fn resolve_cached(
        &self,
        spec: &str,
        reference: &oci_client::Reference,
    ) -> Result<ResolvedImage> {
        let record = self.cached(reference)?.ok_or_else(|| {
            image_error(
                spec,
                "not in the image cache; pull it with runtime.images.pull()",
            )
        })?;
        self.resolve_digest(spec, &record.manifest_digest)
    }

    fn resolve_digest(&self, spec: &str, manifest_digest: &str) -> Result<ResolvedImage> {
        let digest: oci_spec::image::Digest = manifest_digest
            .parse()
            .map_err(|e| image_error(spec, format!("bad manifest digest in the index: {e}")))?;
        let descriptor =
            oci_spec::image::Descriptor::new(oci_spec::image::MediaType::ImageManifest, 0, digest);
        layout::resolve_manifest(&self.root, &descriptor).map_err(|e| {
            image_error(
                spec,
                format!("the cached copy is damaged ({e}); remove it with runtime.images.remove() and pull it again"),
            )
        })
    }

    /// Resolves `rootfs_path` / `image` options to a prepared image: an OCI layout, or a
    /// registry image already in the cache (see [`ImageStore::ensure`]). Blocking: call it
    /// from a blocking thread.
    pub fn prepare(
        &self,
        image: Option<&str>,
        rootfs_path: Option<&str>,
        disk_size_gb: Option<u32>,
    ) -> Result<PreparedImage> {
        self.prepare_reporting(image, rootfs_path, disk_size_gb)
            .map(|(prepared, _)| prepared)
    }

    /// [`ImageStore::prepare`], also telling whether this call built the base disk (`true`)
    /// or found it cached, for progress reports.
    pub fn prepare_reporting(
        &self,
        image: Option<&str>,
        rootfs_path: Option<&str>,
        disk_size_gb: Option<u32>,
    ) -> Result<(PreparedImage, bool)> {
        let spec = rootfs_path
            .or(image)
            .ok_or_else(|| Error::InvalidOption("no image given".into()))?;
        let source = classify(spec, rootfs_path.is_some())?;
        // Cached blobs are read until the base disk is built: garbage collection must wait.
        let _gc = match source {
            ImageSource::Layout(..) => None,
            _ => Some(GcLock::shared(&self.root)?),
        };
        let resolved = match source {
            ImageSource::Layout(path, tag) => layout::resolve(&path, tag.as_deref())?,
            ImageSource::Reference(r) => self.resolve_cached(spec, &r)?,
            ImageSource::Archive(path) => {
                let records = self.import_archive(&path, None)?;
                self.resolve_digest(spec, &records[0].manifest_digest)?
            }
        };
        let (base_disk, built) = self.base_disk(spec, &resolved, disk_size_gb)?;
        let config = resolved.config.config().clone().unwrap_or_default();
        let env = config
            .env()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        let prepared = PreparedImage {
            reference: spec.to_owned(),
            manifest_digest: resolved.manifest_digest.clone(),
            base_disk,
            env,
            working_dir: config.working_dir().clone().filter(|d| !d.is_empty()),
            user: config.user().clone().filter(|u| !u.is_empty()),
            entrypoint: config.entrypoint().clone().unwrap_or_default(),
            cmd: config.cmd().clone().unwrap_or_default(),
        };
        Ok((prepared, built))
    }

    /// The image's base disk: `disks/<digest>.ext4` with the default free space, or
    /// `disks/<digest>-<N>g.ext4` with N GiB free (`disk_size_gb`), built once each; and
    /// whether this call built it.
    fn base_disk(
        &self,
        spec: &str,
        image: &ResolvedImage,
        disk_size_gb: Option<u32>,
    ) -> Result<(PathBuf, bool)> {
        let mut key = image.manifest_digest.replace(':', "-");
        if let Some(gb) = disk_size_gb {
            key.push_str(&format!("-{gb}g"));
        }
        let disks = self.root.join("disks");
        let disk = disks.join(format!("{key}.ext4"));
        if disk.is_file() {
            return Ok((disk, false));
        }
        let lock_path = disks.join(format!("{key}.lock"));
        let lock =
            File::create(&lock_path).context(|| format!("create {}", lock_path.display()))?;
        lock.lock()
            .context(|| format!("lock {}", lock_path.display()))?;
        // Another process may have built it while we waited for the lock.
        if disk.is_file() {
            return Ok((disk, false));
        }
        let built = self.build_base_disk(spec, image, disk_size_gb, &disk);
        if built.is_err() {
            // Nothing of a failed build stays in the cache. Deleting the lock file is safe:
            // a process that still locks the old file builds its own copy (into its own
            // staging directory, renamed into place), which only costs time.
            let _ = fs::remove_file(&lock_path);
        }
        drop(lock);
        built.map(|()| (disk, true))
    }

    fn build_base_disk(
        &self,
        spec: &str,
        image: &ResolvedImage,
        disk_size_gb: Option<u32>,
        disk: &Path,
    ) -> Result<()> {
        let started = Instant::now();
        let staging = tempfile::Builder::new()
            .prefix("unpack-")
            .tempdir_in(self.root.join("tmp"))
            .context(|| "create a staging directory".into())?;
        let rootfs = staging.path().join("rootfs");
        let mut unpacker =
            unpack::Unpacker::new(&rootfs).context(|| format!("create {}", rootfs.display()))?;
        unpacker.set_limits(self.limits);
        // The staged copy and the base disk each take about the image's size.
        unpacker.set_free_space(free_space(staging.path()).saturating_sub(FREE_SPACE_RESERVE) / 2);
        for layer in &image.layers {
            apply_layer(&mut unpacker, layer)
                .map_err(|e| image_error(spec, format!("layer {}: {e}", layer.digest)))?;
        }
        let manifest = unpacker.into_manifest();
        let partial = staging.path().join("base.ext4");
        ext4::build_base_disk(
            &rootfs,
            &manifest,
            &partial,
            disk_size_gb.map(|gb| u64::from(gb) << 30),
        )?;
        fs::rename(&partial, disk).context(|| format!("move base disk to {}", disk.display()))?;
        tracing::info!(image = spec, digest = %image.manifest_digest, elapsed_ms = started.elapsed().as_millis() as u64, "built base disk");
        Ok(())
    }
}

/// Space kept free on the cache's file system when an image is unpacked.
const FREE_SPACE_RESERVE: u64 = 64 << 20;

/// Bytes available to this user on the file system holding `dir` (`u64::MAX` if unknown).
fn free_space(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return u64::MAX;
    };
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a valid, writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return u64::MAX;
    }
    (stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64)
}

/// Unpacks one layer blob. The blob is checked against its stated size and digest before a
/// byte of it is unpacked (and hashed again while it is, so a blob changed in between is
/// caught too).
fn apply_layer(unpacker: &mut unpack::Unpacker, layer: &layout::LayerBlob) -> std::io::Result<()> {
    let mut file = File::open(&layer.path)?;
    let len = file.metadata()?.len();
    if let Some(stated) = layer.size.filter(|&s| s != len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("size mismatch: the manifest states {stated} bytes, the blob has {len}"),
        ));
    }
    VerifyingReader::new(BufReader::with_capacity(1 << 20, &mut file), &layer.digest).finish()?;
    file.rewind()?;
    let file = BufReader::with_capacity(1 << 20, file);
    let mut verifying = VerifyingReader::new(file, &layer.digest);
    match layer.compression {
        Compression::None => unpacker.apply_layer(&mut verifying)?,
        Compression::Gzip => unpacker.apply_layer(flate2::read::GzDecoder::new(&mut verifying))?,
    }
    verifying.finish()
}

/// The size in bytes of the content of `path` (sparse files count what they use).
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}
