//! The registry's errors: [`PullError`] (what the image store sees), and inside a pull why a
//! manifest fetch ([`ManifestError`]), a source ([`SourceError`]) or a blob download
//! ([`DownloadCause`]) failed.

use std::io;

use oci_client::errors::OciDistributionError;

use super::retry::{describe, transient, Transient};
use super::MIRRORS_ENV;
use crate::image::layout::UnsupportedDigest;
use crate::image::metadata::MetadataError;

/// Why a pull failed; the image store turns it into an error naming the image.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("the image reference is empty")]
    EmptyReference,
    #[error("{reference:?} is not a valid image reference ({why}); use NAME[:TAG] or NAME@sha256:DIGEST, e.g. `python:slim` or `ghcr.io/org/app:1.0`")]
    InvalidReference {
        reference: String,
        #[source]
        why: ReferenceProblem,
    },
    #[error("{MIRRORS_ENV}: {item:?} is not REGISTRY=URL (e.g. docker.io=http://127.0.0.1:5000)")]
    MirrorsEnv { item: String },
    #[error("mirror {url:?} of {registry}: give scheme and host only, e.g. http://127.0.0.1:5000")]
    MirrorNotHost { url: String, registry: String },
    #[error("mirror {url:?} of {registry}: unsupported scheme {scheme:?} (use http or https)")]
    MirrorScheme {
        url: String,
        registry: String,
        scheme: String,
    },
    #[error(
        "mirror {url:?} of {registry}: plain HTTP is allowed only for loopback hosts; \
         to allow it for {host}, add ImageRegistry(host={host:?}, insecure=True) to image_registries"
    )]
    MirrorPlainHttp {
        url: String,
        registry: String,
        host: String,
    },
    /// A source failed in a way the next cannot mend (access refused, a broken image): `label`
    /// names it (`http://127.0.0.1:5000 (mirror of docker.io)`).
    #[error("from {label}: {error}")]
    Refused {
        label: String,
        #[source]
        error: SourceError,
    },
    /// Every source failed, each for its own reason.
    #[error("{}", failures_text(.0))]
    Failed(Vec<SourceFailure>),
}

/// Why a reference does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceProblem {
    #[error(transparent)]
    Parse(#[from] oci_client::ParseError),
    #[error("repository names must be lowercase")]
    Uppercase,
}

/// One source that failed and why.
#[derive(Debug)]
pub struct SourceFailure {
    pub label: String,
    pub error: SourceError,
}

/// `label: reason; label: reason`, with a hint when the sources could not be reached.
fn failures_text(failures: &[SourceFailure]) -> String {
    let mut reason = failures
        .iter()
        .map(|f| format!("{}: {}", f.label, f.error))
        .collect::<Vec<_>>()
        .join("; ");
    if reason.contains("cannot connect") || reason.contains("timed out") {
        reason.push_str(
            " (offline or air-gapped? point registry_mirrors or BOXLITE_REGISTRY_MIRRORS at a reachable mirror)",
        );
    }
    reason
}

/// Why a manifest could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The registry refused or could not be reached.
    #[error(transparent)]
    Registry(#[from] OciDistributionError),
    /// The manifest is larger than `limit` ([`metadata::MAX_METADATA_BYTES`]); `length` is
    /// what the registry announced, if it did (it was read no further than the limit).
    ///
    /// [`metadata::MAX_METADATA_BYTES`]: crate::image::metadata::MAX_METADATA_BYTES
    #[error("the manifest is {} bytes long: an image's metadata may have at most {limit} bytes; cut off", size_text(*.length, *.limit))]
    TooLarge { length: Option<u64>, limit: u64 },
}

/// `length`, or "over `limit`" when the body was cut off before its end.
pub(super) fn size_text(length: Option<u64>, limit: u64) -> String {
    length.map_or_else(|| format!("over {limit}"), |l| l.to_string())
}

impl Transient for ManifestError {
    fn transient(&self) -> bool {
        match self {
            ManifestError::Registry(e) => transient(e),
            ManifestError::TooLarge { .. } => false,
        }
    }
}

/// Why one source (a mirror or the registry itself) failed, and whether the next may be tried.
#[derive(Debug, thiserror::Error)]
pub(super) enum EndpointError {
    /// This source does not have the image or cannot be reached: try the next one.
    #[error(transparent)]
    TryNext(SourceError),
    /// The image is broken or access is refused: stop.
    #[error(transparent)]
    Fatal(SourceError),
}

/// What went wrong with one source; the text is what the user reads after the source's name.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The registry refused or could not be reached.
    #[error("{}", describe(.0))]
    Registry(#[source] OciDistributionError),
    /// The registry does not have the manifest.
    #[error("not found ({})", describe(.0))]
    NotFound(#[source] OciDistributionError),
    #[error("cannot create an HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The manifest is over the metadata cap.
    #[error(transparent)]
    Manifest(ManifestError),
    /// A stated size is over the metadata cap.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("digest mismatch: asked for {wanted}, the manifest served hashes to {actual}")]
    ManifestDigest { wanted: String, actual: String },
    #[error("digest mismatch: manifest {expected} hashes to {actual}")]
    ChildManifestDigest { expected: String, actual: String },
    #[error("the image index is not valid: {0}")]
    InvalidIndex(#[source] serde_json::Error),
    #[error("the manifest is not valid: {0}")]
    InvalidManifest(#[source] serde_json::Error),
    #[error("storing the index: {0}")]
    StoreIndex(#[source] io::Error),
    #[error("storing the manifest: {0}")]
    StoreManifest(#[source] io::Error),
    #[error("the image has {count} layers, more than the {max} supported")]
    TooManyLayers { count: usize, max: usize },
    /// The layers' stated sizes exceed `image_max_bytes` (the limit's own message).
    #[error(transparent)]
    TooManyBytes(io::Error),
    #[error("the image has no linux/{arch} variant (it offers: {offered})")]
    NoPlatform { arch: String, offered: String },
    #[error(transparent)]
    Digest(#[from] UnsupportedDigest),
    /// One blob could not be downloaded.
    #[error("blob {digest}: {source}")]
    Blob {
        digest: String,
        #[source]
        source: DownloadCause,
    },
}

/// Why one attempt at a blob failed, and whether another attempt may help.
#[derive(Debug)]
pub(super) enum DownloadError {
    Transient(DownloadCause),
    Fatal(DownloadCause),
}

/// What went wrong downloading one blob.
#[derive(Debug, thiserror::Error)]
pub enum DownloadCause {
    /// The registry refused or could not be reached.
    #[error("{}", describe(.0))]
    Registry(#[source] OciDistributionError),
    #[error("size mismatch: the manifest states {total} bytes, the registry announces {length}")]
    AnnouncedSize { total: u64, length: u64 },
    #[error("cannot create a download file: {0}")]
    CreateFile(#[source] io::Error),
    /// Reopening the download file failed.
    #[error("{0}")]
    Reopen(#[source] io::Error),
    /// oci-client's own check of the digest ended the stream.
    #[error("digest mismatch: {0}")]
    StreamDigest(#[source] io::Error),
    /// The stream broke off.
    #[error("{0}")]
    Stream(#[source] io::Error),
    #[error(
        "size mismatch: the registry sent more than the {total} bytes the manifest states; cut off"
    )]
    TooLong { total: u64 },
    #[error("writing to the image cache: {0}")]
    Write(#[source] io::Error),
    #[error("size mismatch: the manifest states {total} bytes, the registry sent {downloaded}")]
    Size { total: u64, downloaded: u64 },
    #[error("digest mismatch: the content served hashes to {actual}")]
    Digest { actual: String },
    #[error("storing the blob: {0}")]
    Store(#[source] io::Error),
}
