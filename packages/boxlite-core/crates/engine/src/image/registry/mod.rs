//! Pulling images from OCI distribution (v2) registries into the blob store, on `oci-client`.
//!
//! References are normalised as Docker does (`python:slim` is `docker.io/library/python:slim`).
//! Mirrors are tried in order before the registry itself; plain HTTP is used only for loopback
//! hosts and hosts configured `insecure`. Every manifest and blob is hashed while it arrives and
//! is stored (renamed into `blobs/`) only when its digest matches.
//!
//! This file holds the pull's public face (options, progress events, [`Puller::pull`] trying
//! each source in turn); the rest is one concern a file: `reference.rs` (Docker's reference
//! normalisation), `endpoint.rs` (mirrors, plain HTTP only where allowed, the clients and
//! credentials per source), `retry.rs` (which registry failures are transient, the backoff,
//! their words for the user), `manifest.rs` (the capped manifest fetch, index and platform
//! selection), `pull.rs` (one source: manifest, size checks, blobs), `blob.rs` (one verified
//! blob download), `error.rs` (the error enums).

mod blob;
mod endpoint;
mod error;
mod manifest;
mod pull;
mod reference;
mod retry;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use oci_client::Reference;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use crate::image::store::BlobStore;
use crate::image::unpack::ImageLimits;

use endpoint::endpoints;
pub use endpoint::parse_mirrors_env;
use error::EndpointError;
pub use error::{
    DownloadCause, ManifestError, PullError, ReferenceProblem, SourceError, SourceFailure,
};
pub use reference::{canonical, parse_reference};

/// The environment variable holding mirrors: `docker.io=http://127.0.0.1:5000,ghcr.io=https://m`.
pub const MIRRORS_ENV: &str = "BOXLITE_REGISTRY_MIRRORS";
/// Credentials and transport settings of one registry host (`host[:port]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageRegistry {
    pub host: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Allow plain HTTP to this host (loopback hosts always may use it).
    pub insecure: bool,
}

/// Where and how images are pulled: mirrors per registry and per-host settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryOptions {
    /// Registry (as in a normalised reference, e.g. `docker.io`) to mirror URLs, tried in order.
    pub registry_mirrors: BTreeMap<String, Vec<String>>,
    pub image_registries: Vec<ImageRegistry>,
}
/// Progress of a pull, as the Python callback receives it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// The manifest is known: the layers to fetch and their total size.
    Resolved {
        reference: String,
        source: String,
        manifest_digest: String,
        layers: usize,
        total_bytes: u64,
    },
    /// Bytes of one blob downloaded so far.
    Progress {
        digest: String,
        downloaded: u64,
        total: u64,
    },
    /// A blob is in the store (`cached`: it was there already).
    LayerDone { digest: String, cached: bool },
}

pub type Progress = Option<UnboundedSender<PullEvent>>;

pub(super) fn emit(progress: &Progress, event: PullEvent) {
    if let Some(tx) = progress {
        let _ = tx.send(event);
    }
}
/// What a pull stored: the image's manifest (and index) digests and blobs.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub reference: String,
    pub manifest_digest: String,
    pub index_digest: Option<String>,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub size: u64,
    pub source: String,
}
/// Pulls images into a blob store.
pub struct Puller {
    options: RegistryOptions,
    store: Arc<BlobStore>,
    limits: ImageLimits,
}

impl Puller {
    pub fn new(options: RegistryOptions, store: Arc<BlobStore>, limits: ImageLimits) -> Puller {
        Puller {
            options,
            store,
            limits,
        }
    }

    /// Pulls `reference` (already parsed) from its mirrors, then its registry.
    pub async fn pull(
        &self,
        reference: &Reference,
        progress: &Progress,
    ) -> Result<PulledImage, PullError> {
        let mut failures = Vec::new();
        for endpoint in endpoints(&self.options, reference)? {
            match self.pull_from(reference, &endpoint, progress).await {
                Ok(image) => return Ok(image),
                Err(EndpointError::Fatal(error)) => {
                    return Err(PullError::Refused {
                        label: endpoint.label,
                        error,
                    })
                }
                Err(EndpointError::TryNext(error)) => {
                    tracing::info!(endpoint = %endpoint.label, reason = %error, "pull failed; trying the next source");
                    failures.push(SourceFailure {
                        label: endpoint.label,
                        error,
                    });
                }
            }
        }
        Err(PullError::Failed(failures))
    }
}
