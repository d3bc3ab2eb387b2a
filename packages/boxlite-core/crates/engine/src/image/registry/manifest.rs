//! Manifests: fetched with a size cap (authenticated as oci-client negotiated), told apart
//! from indexes, and the index entry for this host's platform chosen.

use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::endpoint::Endpoint;
use super::error::{EndpointError, ManifestError, SourceError};
use crate::image::{layout, metadata};

pub(super) const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Fetches manifests with a size cap, authenticated as oci-client negotiated.
pub(super) struct ManifestFetch<'a> {
    pub(super) http: &'a reqwest::Client,
    pub(super) endpoint: &'a Endpoint,
    pub(super) auth: &'a RegistryAuth,
    /// The bearer token oci-client obtained, if the registry wants one.
    pub(super) token: Option<&'a str>,
}

impl ManifestFetch<'_> {
    /// The manifest `at` names (by digest, else tag); [`ManifestError::TooLarge`] when it is
    /// larger than [`metadata::MAX_METADATA_BYTES`] (read no further than that).
    pub(super) async fn get(&self, at: &Reference) -> Result<Vec<u8>, ManifestError> {
        let scheme = if self.endpoint.http { "http" } else { "https" };
        let url = format!(
            "{scheme}://{}/v2/{}/manifests/{}{}",
            at.resolve_registry(),
            at.repository(),
            at.digest().or(at.tag()).unwrap_or("latest"),
            at.namespace()
                .map(|ns| format!("?ns={ns}"))
                .unwrap_or_default()
        );
        let mut request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_TYPES.join(", "));
        request = match (self.token, self.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            _ => request,
        };
        let mut response = request.send().await.map_err(OciDistributionError::from)?;
        let status = response.status();
        let limit = metadata::MAX_METADATA_BYTES;
        if let Some(length) = response.content_length().filter(|&l| l > limit) {
            return Err(ManifestError::TooLarge {
                length: Some(length),
                limit,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(OciDistributionError::from)? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(ManifestError::TooLarge {
                    length: None,
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        if status == reqwest::StatusCode::OK {
            return Ok(body);
        }
        Err(ManifestError::Registry(match status {
            reqwest::StatusCode::UNAUTHORIZED => OciDistributionError::UnauthorizedError { url },
            reqwest::StatusCode::NOT_FOUND
                if serde_json::from_slice::<OciEnvelope>(&body).is_err() =>
            {
                OciDistributionError::ImageManifestNotFoundError(url)
            }
            s if s.is_client_error() => match serde_json::from_slice::<OciEnvelope>(&body) {
                Ok(envelope) => OciDistributionError::RegistryError { envelope, url },
                Err(_) => OciDistributionError::ServerError {
                    code: s.as_u16(),
                    url,
                    message: String::from_utf8_lossy(&body).into_owned(),
                },
            },
            s => OciDistributionError::ServerError {
                code: s.as_u16(),
                url,
                message: String::from_utf8_lossy(&body).into_owned(),
            },
        }))
    }
}

pub(super) fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    match probe.media_type {
        Some(t) => Some(t),
        // An OCI index may omit mediaType; it is the one with `manifests`.
        None if probe.manifests.is_some() => Some("application/vnd.oci.image.index.v1+json".into()),
        None => None,
    }
}

pub(super) fn is_index(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// The index entry for this host's platform (linux and our architecture).
pub(super) fn select_platform(index: &ImageIndex) -> Result<Descriptor, EndpointError> {
    let arch = layout::host_arch();
    let found = index.manifests().iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| *p.os() == oci_spec::image::Os::Linux && *p.architecture() == arch)
            && !matches!(d.media_type(), MediaType::ImageIndex)
    });
    found.cloned().ok_or_else(|| {
        let offered: Vec<String> = index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .map(|p| format!("{}/{}", p.os(), p.architecture()))
            .collect();
        EndpointError::Fatal(SourceError::NoPlatform {
            arch: arch.to_string(),
            offered: if offered.is_empty() {
                "none".into()
            } else {
                offered.join(", ")
            },
        })
    })
}

pub(super) fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}
