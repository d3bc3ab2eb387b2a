//! Pulling from one source: authenticate, fetch the manifest (through an index to this
//! platform's, digests checked), refuse stated sizes over the limits before anything is
//! fetched, download the blobs a few at a time, and store the manifest last.

use futures::StreamExt as _;
use oci_client::errors::OciDistributionError;
use oci_client::{Reference, RegistryOperation};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::endpoint::Endpoint;
use super::error::{EndpointError, ManifestError, SourceError};
use super::manifest::{is_index, media_type_of, select_platform, sha256, ManifestFetch};
use super::retry::{not_found, retry, transient};
use super::{canonical, emit, Progress, PullEvent, PulledImage, Puller};
use crate::image::metadata;

/// Layers downloaded at once.
const CONCURRENT_LAYERS: usize = 3;
/// Most layers an image may have (Docker stops at 127).
const MAX_LAYERS: usize = 256;

impl Puller {
    pub(super) async fn pull_from(
        &self,
        reference: &Reference,
        endpoint: &Endpoint,
        progress: &Progress,
    ) -> Result<PulledImage, EndpointError> {
        let client = self.client(endpoint);
        let mut at = reference.clone();
        if endpoint.mirror {
            at.set_mirror_registry(endpoint.host.clone());
        }
        let auth = self.auth_for(endpoint, reference);
        let classify = |e: OciDistributionError| {
            if transient(&e) || not_found(&e) {
                EndpointError::TryNext(SourceError::Registry(e))
            } else {
                EndpointError::Fatal(SourceError::Registry(e))
            }
        };
        let token = retry("authenticate", || {
            client.auth(&at, &auth, RegistryOperation::Pull)
        })
        .await
        .map_err(classify)?;
        let http = self.http_client()?;
        let fetch = ManifestFetch {
            http: &http,
            endpoint,
            auth: &auth,
            token: token.as_deref(),
        };
        let manifest_error = |e: ManifestError| match e {
            ManifestError::Registry(e) => classify(e),
            too_large @ ManifestError::TooLarge { .. } => {
                EndpointError::Fatal(SourceError::Manifest(too_large))
            }
        };
        let bytes = retry("manifest", || fetch.get(&at))
            .await
            .map_err(|e| match e {
                ManifestError::Registry(e) if not_found(&e) => {
                    EndpointError::TryNext(SourceError::NotFound(e))
                }
                e => manifest_error(e),
            })?;
        let top_digest = sha256(&bytes);
        if let Some(wanted) = reference.digest() {
            if wanted != top_digest {
                return Err(EndpointError::Fatal(SourceError::ManifestDigest {
                    wanted: wanted.to_owned(),
                    actual: top_digest,
                }));
            }
        }
        let (manifest_bytes, manifest_digest, index_digest) = match media_type_of(&bytes) {
            Some(t) if is_index(&t) => {
                let index: ImageIndex = serde_json::from_slice(&bytes)
                    .map_err(|e| EndpointError::Fatal(SourceError::InvalidIndex(e)))?;
                let chosen = select_platform(&index)?;
                let child_digest = chosen.digest().to_string();
                let child_ref = at.clone_with_digest(child_digest.clone());
                let child = retry("manifest", || fetch.get(&child_ref))
                    .await
                    .map_err(manifest_error)?;
                let actual = sha256(&child);
                if actual != child_digest {
                    return Err(EndpointError::Fatal(SourceError::ChildManifestDigest {
                        expected: child_digest,
                        actual,
                    }));
                }
                self.store
                    .put_bytes(&top_digest, &bytes)
                    .map_err(|e| EndpointError::Fatal(SourceError::StoreIndex(e)))?;
                (child.to_vec(), child_digest, Some(top_digest))
            }
            _ => (bytes.to_vec(), top_digest, None),
        };
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| EndpointError::Fatal(SourceError::InvalidManifest(e)))?;
        let layers: Vec<Descriptor> = manifest.layers().clone();
        self.check_sizes(&manifest)?;
        let total: u64 = layers.iter().map(|d| d.size()).sum::<u64>() + manifest.config().size();
        emit(
            progress,
            PullEvent::Resolved {
                reference: canonical(reference),
                source: endpoint.label.clone(),
                manifest_digest: manifest_digest.clone(),
                layers: layers.len(),
                total_bytes: total,
            },
        );

        let blobs: Vec<Descriptor> = std::iter::once(manifest.config().clone())
            .chain(layers.iter().cloned())
            .collect();
        let mut fetches = Vec::with_capacity(blobs.len());
        for d in &blobs {
            fetches.push(self.fetch_blob(&client, &at, d, progress));
        }
        let results: Vec<Result<(), EndpointError>> = futures::stream::iter(fetches)
            .buffer_unordered(CONCURRENT_LAYERS)
            .collect()
            .await;
        for r in results {
            r?;
        }
        // The manifest goes in last: a stored manifest means its blobs are all there.
        self.store
            .put_bytes(&manifest_digest, &manifest_bytes)
            .map_err(|e| EndpointError::Fatal(SourceError::StoreManifest(e)))?;
        Ok(PulledImage {
            reference: canonical(reference),
            manifest_digest,
            index_digest,
            config_digest: manifest.config().digest().to_string(),
            layer_digests: layers.iter().map(|d| d.digest().to_string()).collect(),
            size: total,
            source: endpoint.label.clone(),
        })
    }

    /// Refuses a manifest whose stated sizes exceed the limits, before anything is fetched.
    pub(super) fn check_sizes(&self, manifest: &ImageManifest) -> Result<(), EndpointError> {
        let config = manifest.config().size();
        metadata::check_stated("the image config", config)
            .map_err(|e| EndpointError::Fatal(e.into()))?;
        if manifest.layers().len() > MAX_LAYERS {
            return Err(EndpointError::Fatal(SourceError::TooManyLayers {
                count: manifest.layers().len(),
                max: MAX_LAYERS,
            }));
        }
        let layers = manifest
            .layers()
            .iter()
            .fold(0u64, |sum, d| sum.saturating_add(d.size()));
        if layers > self.limits.image_max_bytes {
            return Err(EndpointError::Fatal(SourceError::TooManyBytes(
                self.limits
                    .too_many_bytes(&format!("its layers are stated to have {layers} bytes,")),
            )));
        }
        Ok(())
    }
}
