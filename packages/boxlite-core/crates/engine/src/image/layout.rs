//! Reading OCI image layouts: index, manifest selection by platform and tag, config, layers.
//! Every blob read through here is checked against its digest.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os,
};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::image::metadata;

const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

pub use crate::image::metadata::MAX_METADATA_BYTES;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub path: PathBuf,
    /// `sha256:<hex>` of the blob as stored.
    pub digest: String,
    /// The size the manifest states, checked against the blob before it is unpacked.
    pub size: Option<u64>,
    pub compression: Compression,
}

/// An image resolved from a layout: what the engine needs to build its base disk and run it.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub manifest_digest: String,
    pub config: ImageConfiguration,
    pub layers: Vec<LayerBlob>,
}

fn not_layout(path: &Path, reason: impl Into<String>) -> Error {
    Error::NotOciLayout {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Splits `path:tag` when the part after the last ':' is no path component.
pub fn split_layout_reference(spec: &str) -> (PathBuf, Option<String>) {
    if let Some((path, tag)) = spec.rsplit_once(':') {
        if !tag.is_empty() && !tag.contains('/') && Path::new(path).join("oci-layout").exists() {
            return (PathBuf::from(path), Some(tag.to_owned()));
        }
    }
    (PathBuf::from(spec), None)
}

/// True when `path` looks like an OCI image layout directory.
pub fn is_layout(path: &Path) -> bool {
    path.join("oci-layout").is_file() && path.join("index.json").is_file()
}

/// A digest that is not `sha256:` and 64 lowercase hex digits.
#[derive(Debug, thiserror::Error)]
#[error("unsupported digest {digest} (only sha256)")]
pub struct UnsupportedDigest {
    pub digest: String,
}

/// Checks that `digest` is `sha256:` and 64 lowercase hex digits (so it is safe in a path).
pub fn check_digest(digest: &str) -> std::result::Result<(), UnsupportedDigest> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(UnsupportedDigest {
            digest: digest.to_owned(),
        }),
    }
}

/// `root/blobs/sha256/<hex>` for a checked digest.
pub fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf> {
    check_digest(digest).map_err(|reason| not_layout(layout, reason.to_string()))?;
    let hex = &digest["sha256:".len()..];
    Ok(layout.join("blobs").join("sha256").join(hex))
}

/// A reader that hashes what passes through it, to verify a blob while it is consumed.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    expected: String,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected_digest: &str) -> Self {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            expected: expected_digest.to_owned(),
        }
    }

    /// Reads whatever the consumer left unread, then compares digests.
    pub fn finish(mut self) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink())?;
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if actual != self.expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "digest mismatch: expected {}, content hashes to {actual}",
                    self.expected
                ),
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads a small JSON document (index, manifest, config) of at most [`MAX_METADATA_BYTES`].
fn read_metadata(layout: &Path, what: &str, file: File) -> Result<Vec<u8>> {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    metadata::read_capped(what, len, file).map_err(|e| not_layout(layout, e.to_string()))
}

fn read_verified_blob(layout: &Path, descriptor: &Descriptor) -> Result<Vec<u8>> {
    let digest = descriptor.digest().to_string();
    let path = blob_path(layout, &digest)?;
    metadata::check_stated(&format!("blob {digest}"), descriptor.size())
        .map_err(|e| not_layout(layout, e.to_string()))?;
    let file = File::open(&path)
        .map_err(|e| not_layout(layout, format!("blob {digest} unreadable: {e}")))?;
    let data = read_metadata(layout, &format!("blob {digest}"), file)?;
    // Size 0: a descriptor made for a cached manifest, whose size is not recorded.
    if descriptor.size() != 0 && descriptor.size() != data.len() as u64 {
        return Err(not_layout(
            layout,
            format!(
                "blob {digest}: size mismatch: stated {} bytes, the blob has {}",
                descriptor.size(),
                data.len()
            ),
        ));
    }
    VerifyingReader::new(&data[..], &digest)
        .finish()
        .map_err(|e| not_layout(layout, format!("blob {digest}: {e}")))?;
    Ok(data)
}

fn platform_matches(descriptor: &Descriptor) -> bool {
    match descriptor.platform() {
        None => true,
        Some(p) => *p.os() == Os::Linux && *p.architecture() == host_arch(),
    }
}

/// This host's architecture as OCI names it.
pub fn host_arch() -> Arch {
    match std::env::consts::ARCH {
        "aarch64" => Arch::ARM64,
        _ => Arch::Amd64,
    }
}

/// Picks the manifest for this host's platform (and `tag`, if given) from an index,
/// descending into nested indexes.
fn select_manifest(layout: &Path, index: &ImageIndex, tag: Option<&str>) -> Result<Descriptor> {
    let tagged: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| match tag {
            None => true,
            Some(t) => d
                .annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME_ANNOTATION))
                .is_some_and(|n| n == t),
        })
        .collect();
    if tagged.is_empty() {
        return Err(not_layout(
            layout,
            format!(
                "no manifest tagged {:?} in index.json",
                tag.unwrap_or_default()
            ),
        ));
    }
    for descriptor in tagged.iter().filter(|d| platform_matches(d)) {
        match descriptor.media_type() {
            MediaType::ImageManifest => return Ok((*descriptor).clone()),
            MediaType::ImageIndex => {
                let nested: ImageIndex =
                    serde_json::from_slice(&read_verified_blob(layout, descriptor)?)
                        .map_err(|e| not_layout(layout, format!("nested index: {e}")))?;
                return select_manifest(layout, &nested, None);
            }
            MediaType::Other(t) if t == "application/vnd.docker.distribution.manifest.v2+json" => {
                return Ok((*descriptor).clone())
            }
            _ => continue,
        }
    }
    Err(not_layout(
        layout,
        format!(
            "no manifest for linux/{} in index.json",
            std::env::consts::ARCH
        ),
    ))
}

/// Resolves the image in the layout at `layout` (optionally the manifest tagged `tag`).
pub fn resolve(layout: &Path, tag: Option<&str>) -> Result<ResolvedImage> {
    if !layout.is_dir() {
        return Err(not_layout(layout, "no such directory"));
    }
    if !layout.join("oci-layout").is_file() {
        return Err(not_layout(layout, "missing the `oci-layout` file"));
    }
    let index_file = File::open(layout.join("index.json"))
        .map_err(|e| not_layout(layout, format!("index.json: {e}")))?;
    let index_bytes = read_metadata(layout, "index.json", index_file)?;
    let index: ImageIndex = serde_json::from_slice(&index_bytes)
        .map_err(|e| not_layout(layout, format!("index.json is not an OCI index: {e}")))?;
    let manifest_descriptor = select_manifest(layout, &index, tag)?;
    resolve_manifest(layout, &manifest_descriptor)
}

/// Resolves the image whose manifest `manifest_descriptor` describes, from the blobs under
/// `layout` (an OCI layout, or the image cache, which keeps blobs the same way).
pub fn resolve_manifest(layout: &Path, manifest_descriptor: &Descriptor) -> Result<ResolvedImage> {
    let manifest: ImageManifest =
        serde_json::from_slice(&read_verified_blob(layout, manifest_descriptor)?)
            .map_err(|e| not_layout(layout, format!("manifest: {e}")))?;
    let config: ImageConfiguration =
        serde_json::from_slice(&read_verified_blob(layout, manifest.config())?)
            .map_err(|e| not_layout(layout, format!("image config: {e}")))?;
    let layers = manifest
        .layers()
        .iter()
        .map(|d| {
            let digest = d.digest().to_string();
            let compression = match d.media_type() {
                MediaType::ImageLayer => Compression::None,
                MediaType::ImageLayerGzip => Compression::Gzip,
                MediaType::Other(t) if t == "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                    Compression::Gzip
                }
                other => {
                    return Err(not_layout(
                        layout,
                        format!("layer {digest} has unsupported media type {other}"),
                    ));
                }
            };
            Ok(LayerBlob {
                path: blob_path(layout, &digest)?,
                digest,
                size: Some(d.size()),
                compression,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ResolvedImage {
        manifest_digest: manifest_descriptor.digest().to_string(),
        config,
        layers,
    })
}
