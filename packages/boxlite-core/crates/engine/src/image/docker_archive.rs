//! Importing `docker save` archives (both the classic layout, `<id>/layer.tar` plus
//! `<hex>.json`, and Docker 25+'s OCI-style `blobs/sha256/…`): `manifest.json` names each
//! image's config, layers and tags. Config and layers are hashed into the blob store, an OCI
//! manifest is written for them, and each tag is recorded in the image index like a pull.
//!
//! Archives are untrusted: `manifest.json` and configs are size-capped, and an import never
//! rebinds a name the cache already holds for other content (remove it first), nor records a
//! digest-pinned name (`name@sha256:…`) for content with another digest.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::image::metadata::{self, MetadataError};
use crate::image::registry::{self, PullError};
use crate::image::store::{BlobStore, ImageDb, ImageRecord};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A blob copied out of the archive.
#[derive(Debug, Clone)]
struct Stored {
    digest: String,
    size: u64,
    gzip: bool,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive at `path` is unreadable, malformed or refused.
    #[error("docker archive {}: {reason}", .path.display())]
    Archive {
        path: PathBuf,
        #[source]
        reason: Problem,
    },
    /// A name for the image is not a valid reference.
    #[error(transparent)]
    Reference(#[from] PullError),
    /// The image index could not be read or written.
    #[error(transparent)]
    Db(#[from] crate::error::Error),
}

/// What is wrong with an archive (the text after `docker archive PATH: `).
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// Reading the archive failed.
    #[error("{0}")]
    Read(#[source] io::Error),
    /// `manifest.json` or a config is over the metadata cap, or unreadable.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("manifest.json is not valid: {0}")]
    InvalidManifest(#[source] serde_json::Error),
    #[error("no manifest.json: not a `docker save` archive (an OCI layout directory goes in rootfs_path)")]
    NoManifest,
    #[error("manifest.json lists no image")]
    NoImage,
    #[error("it holds {count} images; a single reference cannot name them all")]
    SeveralImages { count: usize },
    /// Copying an entry into the blob store failed.
    #[error("{name}: {source}")]
    Store {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("{name} is listed in manifest.json but missing")]
    Missing { name: String },
    #[error("storing the manifest: {0}")]
    StoreManifest(#[source] io::Error),
    #[error("an image in it has no tag: pass a reference to name it")]
    NoTag,
    #[error(
        "it names an image {canonical}, but that image's manifest hashes to \
         {manifest_digest}: a digest-pinned name only ever names content with that digest"
    )]
    PinnedDigest {
        canonical: String,
        manifest_digest: String,
    },
    #[error(
        "it names an image {canonical}, which the cache already holds for other \
         content ({cached_digest} from {cached_source}); an import never replaces a cached name: remove it first \
         (runtime.images.remove({canonical:?})) or import under another name (reference=...)"
    )]
    NameTaken {
        canonical: String,
        cached_digest: String,
        cached_source: String,
    },
    #[error("it names two different images {reference}")]
    TwoImages { reference: String },
}

fn archive_error(path: &Path, reason: impl Into<Problem>) -> ArchiveError {
    ArchiveError::Archive {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl From<io::Error> for Problem {
    fn from(e: io::Error) -> Self {
        Problem::Read(e)
    }
}

fn normalise(path: &str) -> String {
    path.trim_start_matches("./").to_owned()
}

/// Reads `manifest.json` (first pass; entries are skipped by seeking).
fn read_manifest(path: &Path) -> Result<Vec<ArchiveImage>, ArchiveError> {
    let file = File::open(path).map_err(|e| archive_error(path, e))?;
    let mut archive = tar::Archive::new(file);
    let entries = archive
        .entries_with_seek()
        .map_err(|e| archive_error(path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| archive_error(path, e))?;
        let name = normalise(
            &entry
                .path()
                .map_err(|e| archive_error(path, e))?
                .to_string_lossy(),
        );
        if name == "manifest.json" {
            let stated = entry.size();
            let text = metadata::read_capped("manifest.json", stated, entry)
                .map_err(|e| archive_error(path, e))?;
            return serde_json::from_slice(&text)
                .map_err(|e| archive_error(path, Problem::InvalidManifest(e)));
        }
    }
    Err(archive_error(path, Problem::NoManifest))
}

/// Copies `reader` into the store while hashing it.
fn store_stream(store: &BlobStore, reader: &mut impl Read) -> io::Result<Stored> {
    let mut partial = store.new_partial()?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    let mut first = [0u8; 2];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        if size == 0 && n >= 2 {
            first.copy_from_slice(&buffer[..2]);
        }
        hasher.update(&buffer[..n]);
        partial.write_all(&buffer[..n])?;
        size += n as u64;
    }
    partial.as_file().sync_all()?;
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    store.commit(partial, &digest)?;
    Ok(Stored {
        digest,
        size,
        gzip: first == [0x1f, 0x8b],
    })
}

/// Imports every image of the archive at `path`; returns what was recorded. `reference`
/// names the (single) image when the archive carries no tag or another name is wanted.
pub fn import(
    store: &BlobStore,
    db: &ImageDb,
    path: &Path,
    reference: Option<&str>,
) -> Result<Vec<ImageRecord>, ArchiveError> {
    let images = read_manifest(path)?;
    if images.is_empty() {
        return Err(archive_error(path, Problem::NoImage));
    }
    if reference.is_some() && images.len() > 1 {
        return Err(archive_error(
            path,
            Problem::SeveralImages {
                count: images.len(),
            },
        ));
    }
    let wanted: std::collections::HashSet<String> = images
        .iter()
        .flat_map(|i| std::iter::once(&i.config).chain(i.layers.iter()))
        .map(|p| normalise(p))
        .collect();

    let mut stored: HashMap<String, Stored> = HashMap::new();
    let file = BufReader::with_capacity(
        1 << 20,
        File::open(path).map_err(|e| archive_error(path, e))?,
    );
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(|e| archive_error(path, e))? {
        let mut entry = entry.map_err(|e| archive_error(path, e))?;
        let name = normalise(
            &entry
                .path()
                .map_err(|e| archive_error(path, e))?
                .to_string_lossy(),
        );
        if !wanted.contains(&name) || stored.contains_key(&name) {
            continue;
        }
        let blob = store_stream(store, &mut entry).map_err(|source| {
            archive_error(
                path,
                Problem::Store {
                    name: name.clone(),
                    source,
                },
            )
        })?;
        stored.insert(name, blob);
    }

    let mut records = Vec::new();
    for image in &images {
        let get = |p: &str| {
            stored
                .get(&normalise(p))
                .cloned()
                .ok_or_else(|| archive_error(path, Problem::Missing { name: p.to_owned() }))
        };
        let config = get(&image.config)?;
        metadata::check_stated(&format!("the config {}", image.config), config.size)
            .map_err(|e| archive_error(path, e))?;
        let layers = image
            .layers
            .iter()
            .map(|l| get(l))
            .collect::<Result<Vec<_>, _>>()?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.digest,
                "size": config.size,
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": if l.gzip {
                    "application/vnd.oci.image.layer.v1.tar+gzip"
                } else {
                    "application/vnd.oci.image.layer.v1.tar"
                },
                "digest": l.digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
        let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        store
            .put_bytes(&manifest_digest, &bytes)
            .map_err(|e| archive_error(path, Problem::StoreManifest(e)))?;
        let names: Vec<String> = match reference {
            Some(r) => vec![r.to_owned()],
            None => image.repo_tags.clone().unwrap_or_default(),
        };
        if names.is_empty() {
            return Err(archive_error(path, Problem::NoTag));
        }
        for name in names {
            let parsed = registry::parse_reference(&name)?;
            let canonical = registry::canonical(&parsed);
            if let Some(pinned) = parsed.digest() {
                if pinned != manifest_digest {
                    return Err(archive_error(
                        path,
                        Problem::PinnedDigest {
                            canonical,
                            manifest_digest,
                        },
                    ));
                }
            }
            if let Some(existing) = db.get(&canonical)? {
                if existing.manifest_digest != manifest_digest {
                    return Err(archive_error(
                        path,
                        Problem::NameTaken {
                            canonical,
                            cached_digest: existing.manifest_digest,
                            cached_source: existing.source,
                        },
                    ));
                }
            }
            let record = ImageRecord {
                reference: canonical,
                repository: parsed.repository().to_owned(),
                manifest_digest: manifest_digest.clone(),
                index_digest: None,
                config_digest: config.digest.clone(),
                layers: layers.iter().map(|l| l.digest.clone()).collect(),
                size: config.size + layers.iter().map(|l| l.size).sum::<u64>(),
                source: format!("docker-archive:{}", path.display()),
                pulled_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string(),
            };
            if let Some(other) = records
                .iter()
                .find(|r: &&ImageRecord| r.reference == record.reference)
            {
                if other.manifest_digest != record.manifest_digest {
                    return Err(archive_error(
                        path,
                        Problem::TwoImages {
                            reference: record.reference,
                        },
                    ));
                }
                continue;
            }
            records.push(record);
        }
    }
    // Recorded only once every name was checked: a refused archive leaves no name behind.
    for record in &records {
        db.put(record)?;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_before() {
        let path = Path::new("/tmp/a.tar");
        let taken = archive_error(
            path,
            Problem::NameTaken {
                canonical: "docker.io/library/x:1".into(),
                cached_digest: "sha256:a".into(),
                cached_source: "docker.io".into(),
            },
        );
        assert_eq!(
            taken.to_string(),
            "docker archive /tmp/a.tar: it names an image docker.io/library/x:1, which the cache \
             already holds for other content (sha256:a from docker.io); an import never replaces \
             a cached name: remove it first (runtime.images.remove(\"docker.io/library/x:1\")) or \
             import under another name (reference=...)"
        );
        let pinned = archive_error(
            path,
            Problem::PinnedDigest {
                canonical: "x@sha256:a".into(),
                manifest_digest: "sha256:b".into(),
            },
        );
        assert_eq!(
            pinned.to_string(),
            "docker archive /tmp/a.tar: it names an image x@sha256:a, but that image's manifest \
             hashes to sha256:b: a digest-pinned name only ever names content with that digest"
        );
        let missing = archive_error(path, Problem::NoManifest);
        assert_eq!(
            missing.to_string(),
            "docker archive /tmp/a.tar: no manifest.json: not a `docker save` archive (an OCI \
             layout directory goes in rootfs_path)"
        );
    }
}
