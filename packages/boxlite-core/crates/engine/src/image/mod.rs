//! Images: resolving a box's image to a prepared, cached, read-only base disk.
//!
//! One base disk per image manifest digest, built once (under a file lock, so concurrent
//! processes build it once too) and shared by every box of that image through qcow2 overlays.

pub mod ext4;
pub mod layout;
pub mod unpack;

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use layout::{Compression, ResolvedImage, VerifyingReader};

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
}

fn image_error(image: &str, reason: impl Into<String>) -> Error {
    Error::Image {
        image: image.to_owned(),
        reason: reason.into(),
    }
}

impl ImageStore {
    /// `root` is `BOXLITE_HOME/images`.
    pub fn new(root: PathBuf) -> Result<ImageStore> {
        for sub in ["disks", "tmp"] {
            fs::create_dir_all(root.join(sub))
                .context(|| format!("create {}", root.join(sub).display()))?;
        }
        Ok(ImageStore { root })
    }

    /// Resolves `rootfs_path` / `image` options to a prepared image. Blocking: call it from a
    /// blocking thread.
    pub fn prepare(&self, image: Option<&str>, rootfs_path: Option<&str>) -> Result<PreparedImage> {
        let spec = rootfs_path
            .or(image)
            .ok_or_else(|| Error::InvalidOption("no image given".into()))?;
        let (path, tag) = layout::split_layout_reference(spec);
        if rootfs_path.is_none() && !layout::is_layout(&path) {
            return Err(image_error(
                spec,
                "pulling images from registries is not available in this build yet; \
                 pass an OCI image layout directory as rootfs_path= (or image=)",
            ));
        }
        let resolved = layout::resolve(&path, tag.as_deref())?;
        let base_disk = self.base_disk(spec, &resolved)?;
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
        Ok(PreparedImage {
            reference: spec.to_owned(),
            manifest_digest: resolved.manifest_digest.clone(),
            base_disk,
            env,
            working_dir: config.working_dir().clone().filter(|d| !d.is_empty()),
            user: config.user().clone().filter(|u| !u.is_empty()),
            entrypoint: config.entrypoint().clone().unwrap_or_default(),
            cmd: config.cmd().clone().unwrap_or_default(),
        })
    }

    fn base_disk(&self, spec: &str, image: &ResolvedImage) -> Result<PathBuf> {
        let key = image.manifest_digest.replace(':', "-");
        let disks = self.root.join("disks");
        let disk = disks.join(format!("{key}.ext4"));
        if disk.is_file() {
            return Ok(disk);
        }
        let lock_path = disks.join(format!("{key}.lock"));
        let lock =
            File::create(&lock_path).context(|| format!("create {}", lock_path.display()))?;
        lock.lock()
            .context(|| format!("lock {}", lock_path.display()))?;
        // Another process may have built it while we waited for the lock.
        if disk.is_file() {
            return Ok(disk);
        }
        let started = Instant::now();
        let staging = tempfile::Builder::new()
            .prefix("unpack-")
            .tempdir_in(self.root.join("tmp"))
            .context(|| "create a staging directory".into())?;
        let rootfs = staging.path().join("rootfs");
        let mut unpacker =
            unpack::Unpacker::new(&rootfs).context(|| format!("create {}", rootfs.display()))?;
        for layer in &image.layers {
            apply_layer(&mut unpacker, layer)
                .map_err(|e| image_error(spec, format!("layer {}: {e}", layer.digest)))?;
        }
        let manifest = unpacker.into_manifest();
        let partial = staging.path().join("base.ext4");
        ext4::build_base_disk(&rootfs, &manifest, &partial)?;
        fs::rename(&partial, &disk).context(|| format!("move base disk to {}", disk.display()))?;
        tracing::info!(image = spec, digest = %image.manifest_digest, elapsed_ms = started.elapsed().as_millis() as u64, "built base disk");
        Ok(disk)
    }
}

fn apply_layer(unpacker: &mut unpack::Unpacker, layer: &layout::LayerBlob) -> std::io::Result<()> {
    let file = BufReader::with_capacity(1 << 20, File::open(&layer.path)?);
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
