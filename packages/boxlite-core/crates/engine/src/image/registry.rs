//! Pulling images from OCI distribution (v2) registries into the blob store, on `oci-client`.
//!
//! References are normalised as Docker does (`python:slim` is `docker.io/library/python:slim`).
//! Mirrors are tried in order before the registry itself; plain HTTP is used only for loopback
//! hosts and hosts configured `insecure`. Every manifest and blob is hashed while it arrives and
//! is stored (renamed into `blobs/`) only when its digest matches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciEnvelope};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc::UnboundedSender;

use crate::image::layout;
use crate::image::metadata;
use crate::image::store::BlobStore;
use crate::image::unpack::ImageLimits;

/// The environment variable holding mirrors: `docker.io=http://127.0.0.1:5000,ghcr.io=https://m`.
pub const MIRRORS_ENV: &str = "BOXLITE_REGISTRY_MIRRORS";

/// Layers downloaded at once.
const CONCURRENT_LAYERS: usize = 3;
/// Attempts per request on transient failures (connection errors, 5xx, 429).
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Most layers an image may have (Docker stops at 127).
const MAX_LAYERS: usize = 256;

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

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

/// Why a pull failed; the image store turns it into an error naming the image.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
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

fn emit(progress: &Progress, event: PullEvent) {
    if let Some(tx) = progress {
        let _ = tx.send(event);
    }
}

/// Parses a reference the way Docker does; a clear error for malformed ones.
pub fn parse_reference(reference: &str) -> Result<Reference, PullError> {
    let trimmed = reference.trim();
    if trimmed.is_empty() {
        return Err(PullError::Invalid("the image reference is empty".into()));
    }
    let invalid = |why: String| {
        PullError::Invalid(format!(
            "{reference:?} is not a valid image reference ({why}); use NAME[:TAG] or NAME@sha256:DIGEST, e.g. `python:slim` or `ghcr.io/org/app:1.0`"
        ))
    };
    let parsed = trimmed
        .parse::<Reference>()
        .map_err(|e| invalid(e.to_string()))?;
    // As Docker: repository names are lowercase.
    if parsed
        .repository()
        .bytes()
        .any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)))
    {
        return Err(invalid("repository names must be lowercase".into()));
    }
    Ok(parsed)
}

/// The canonical text of a reference: `docker.io/library/alpine:latest`, `…@sha256:…`.
pub fn canonical(reference: &Reference) -> String {
    match (reference.tag(), reference.digest()) {
        (None, None) => format!("{}:latest", reference.whole()),
        _ => reference.whole(),
    }
}

fn is_loopback(host: &str) -> bool {
    let name = host
        .strip_prefix('[')
        .and_then(|h| h.split_once(']'))
        .map(|(h, _)| h)
        .unwrap_or_else(|| host.rsplit_once(':').map_or(host, |(h, _)| h));
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses `docker.io=http://127.0.0.1:5000,ghcr.io=https://mirror.example` (several mirrors of
/// one registry: repeat the key).
pub fn parse_mirrors_env(value: &str) -> Result<BTreeMap<String, Vec<String>>, PullError> {
    let mut mirrors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (registry, url) = item.split_once('=').ok_or_else(|| {
            PullError::Invalid(format!(
                "{MIRRORS_ENV}: {item:?} is not REGISTRY=URL (e.g. docker.io=http://127.0.0.1:5000)"
            ))
        })?;
        mirrors
            .entry(registry.trim().to_owned())
            .or_default()
            .push(url.trim().to_owned());
    }
    Ok(mirrors)
}

/// One place to pull from: a mirror or the registry itself.
#[derive(Debug, Clone)]
struct Endpoint {
    /// `host[:port]` as requests address it.
    host: String,
    http: bool,
    /// Shown in messages: `http://127.0.0.1:5000 (mirror of docker.io)`.
    label: String,
    mirror: bool,
}

/// Splits a mirror URL into host and scheme; refuses plain HTTP to non-loopback hosts that are
/// not configured `insecure`.
fn mirror_endpoint(
    registry: &str,
    url: &str,
    options: &RegistryOptions,
) -> Result<Endpoint, PullError> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(PullError::Invalid(format!(
            "mirror {url:?} of {registry}: give scheme and host only, e.g. http://127.0.0.1:5000"
        )));
    }
    let http = match scheme {
        "http" => true,
        "https" => false,
        other => {
            return Err(PullError::Invalid(format!(
                "mirror {url:?} of {registry}: unsupported scheme {other:?} (use http or https)"
            )))
        }
    };
    if http && !is_loopback(host) && !host_settings(options, host).is_some_and(|r| r.insecure) {
        return Err(PullError::Invalid(format!(
            "mirror {url:?} of {registry}: plain HTTP is allowed only for loopback hosts; \
             to allow it for {host}, add ImageRegistry(host={host:?}, insecure=True) to image_registries"
        )));
    }
    Ok(Endpoint {
        host: host.to_owned(),
        http,
        label: format!("{scheme}://{host} (mirror of {registry})"),
        mirror: true,
    })
}

fn host_settings<'a>(options: &'a RegistryOptions, host: &str) -> Option<&'a ImageRegistry> {
    options.image_registries.iter().find(|r| r.host == host)
}

fn endpoints(options: &RegistryOptions, reference: &Reference) -> Result<Vec<Endpoint>, PullError> {
    let registry = reference.registry();
    let mut list = Vec::new();
    for url in options.registry_mirrors.get(registry).into_iter().flatten() {
        list.push(mirror_endpoint(registry, url, options)?);
    }
    let host = reference.resolve_registry().to_owned();
    let http = is_loopback(&host) || host_settings(options, registry).is_some_and(|r| r.insecure);
    let scheme = if http { "http" } else { "https" };
    list.push(Endpoint {
        label: format!("{scheme}://{host}"),
        host,
        http,
        mirror: false,
    });
    Ok(list)
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

/// Is this failure worth another attempt (network trouble, overloaded server)?
fn transient(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::RequestError(e) => {
            e.is_connect() || e.is_timeout() || e.is_body() || e.is_request()
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// A failure [`retry`] may try again.
trait Transient: std::fmt::Display {
    fn transient(&self) -> bool;
}

impl Transient for OciDistributionError {
    fn transient(&self) -> bool {
        transient(self)
    }
}

/// Runs `op` up to [`ATTEMPTS`] times with exponential backoff while it fails transiently.
async fn retry<T, E, F, Fut>(what: &str, mut op: F) -> Result<T, E>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < ATTEMPTS && e.transient() => {
                tracing::debug!(what, attempt, error = %e, "transient registry error; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Says what went wrong in words a user can act on.
fn describe(err: &OciDistributionError) -> String {
    match err {
        OciDistributionError::RequestError(e) if e.is_connect() => {
            format!("cannot connect ({})", root_cause(e))
        }
        OciDistributionError::RequestError(e) if e.is_timeout() => "the request timed out".into(),
        OciDistributionError::RequestError(e) => root_cause(e),
        OciDistributionError::UnauthorizedError { .. } => {
            "authentication required or refused (401): check the username and password in image_registries".into()
        }
        OciDistributionError::AuthenticationFailure(reason) => format!(
            "the token server refused the credentials: {}; check image_registries",
            reason.trim()
        ),
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .map(|e| format!("{:?}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        OciDistributionError::ServerError { code, message, .. } => {
            format!("HTTP {code}: {}", message.trim())
        }
        other => other.to_string(),
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn not_found(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                format!("{:?}", e.code).as_str(),
                "ManifestUnknown" | "NameUnknown" | "BlobUnknown"
            )
        }),
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        _ => false,
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
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
                Err(EndpointError::Fatal(reason)) => {
                    return Err(PullError::Failed(format!(
                        "from {}: {reason}",
                        endpoint.label
                    )))
                }
                Err(EndpointError::TryNext(reason)) => {
                    tracing::info!(endpoint = %endpoint.label, %reason, "pull failed; trying the next source");
                    failures.push(format!("{}: {reason}", endpoint.label));
                }
            }
        }
        let mut reason = failures.join("; ");
        if reason.contains("cannot connect") || reason.contains("timed out") {
            reason.push_str(
                " (offline or air-gapped? point registry_mirrors or BOXLITE_REGISTRY_MIRRORS at a reachable mirror)",
            );
        }
        Err(PullError::Failed(reason))
    }

    fn client(&self, endpoint: &Endpoint) -> Client {
        // reqwest is built without a default TLS crypto provider; ring is ours.
        static PROVIDER: std::sync::Once = std::sync::Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let http_hosts = if endpoint.http {
            vec![endpoint.host.clone()]
        } else {
            Vec::new()
        };
        Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(http_hosts),
            // We select the platform ourselves (nested indexes, a clear error).
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("boxlite/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        })
    }

    /// The HTTP client for manifests (oci-client's `pull_manifest_raw` reads a body of any
    /// length into memory; ours stops at [`metadata::MAX_METADATA_BYTES`]).
    fn http_client(&self) -> Result<reqwest::Client, EndpointError> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("boxlite/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EndpointError::Fatal(format!("cannot create an HTTP client: {e}")))
    }

    fn auth_for(&self, endpoint: &Endpoint, reference: &Reference) -> RegistryAuth {
        let settings = host_settings(&self.options, &endpoint.host).or_else(|| {
            (!endpoint.mirror)
                .then(|| host_settings(&self.options, reference.registry()))
                .flatten()
        });
        match settings {
            Some(ImageRegistry {
                username: Some(user),
                password,
                ..
            }) => RegistryAuth::Basic(user.clone(), password.clone().unwrap_or_default()),
            _ => RegistryAuth::Anonymous,
        }
    }

    async fn pull_from(
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
            let reason = describe(&e);
            if transient(&e) || not_found(&e) {
                EndpointError::TryNext(reason)
            } else {
                EndpointError::Fatal(reason)
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
                EndpointError::Fatal(too_large.to_string())
            }
        };
        let bytes = retry("manifest", || fetch.get(&at))
            .await
            .map_err(|e| match e {
                ManifestError::Registry(e) if not_found(&e) => {
                    EndpointError::TryNext(format!("not found ({})", describe(&e)))
                }
                e => manifest_error(e),
            })?;
        let top_digest = sha256(&bytes);
        if let Some(wanted) = reference.digest() {
            if wanted != top_digest {
                return Err(EndpointError::Fatal(format!(
                    "digest mismatch: asked for {wanted}, the manifest served hashes to {top_digest}"
                )));
            }
        }
        let (manifest_bytes, manifest_digest, index_digest) = match media_type_of(&bytes) {
            Some(t) if is_index(&t) => {
                let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| {
                    EndpointError::Fatal(format!("the image index is not valid: {e}"))
                })?;
                let chosen = select_platform(&index)?;
                let child_digest = chosen.digest().to_string();
                let child_ref = at.clone_with_digest(child_digest.clone());
                let child = retry("manifest", || fetch.get(&child_ref))
                    .await
                    .map_err(manifest_error)?;
                let actual = sha256(&child);
                if actual != child_digest {
                    return Err(EndpointError::Fatal(format!(
                        "digest mismatch: manifest {child_digest} hashes to {actual}"
                    )));
                }
                self.store
                    .put_bytes(&top_digest, &bytes)
                    .map_err(|e| EndpointError::Fatal(format!("storing the index: {e}")))?;
                (child.to_vec(), child_digest, Some(top_digest))
            }
            _ => (bytes.to_vec(), top_digest, None),
        };
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| EndpointError::Fatal(format!("the manifest is not valid: {e}")))?;
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
            .map_err(|e| EndpointError::Fatal(format!("storing the manifest: {e}")))?;
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
    fn check_sizes(&self, manifest: &ImageManifest) -> Result<(), EndpointError> {
        let config = manifest.config().size();
        metadata::check_stated("the image config", config).map_err(EndpointError::Fatal)?;
        if manifest.layers().len() > MAX_LAYERS {
            return Err(EndpointError::Fatal(format!(
                "the image has {} layers, more than the {MAX_LAYERS} supported",
                manifest.layers().len()
            )));
        }
        let layers = manifest
            .layers()
            .iter()
            .fold(0u64, |sum, d| sum.saturating_add(d.size()));
        if layers > self.limits.image_max_bytes {
            return Err(EndpointError::Fatal(
                self.limits
                    .too_many_bytes(&format!("its layers are stated to have {layers} bytes,"))
                    .to_string(),
            ));
        }
        Ok(())
    }

    /// Downloads one blob into the store unless it is there; verifies it on the way.
    async fn fetch_blob(
        &self,
        client: &Client,
        at: &Reference,
        descriptor: &Descriptor,
        progress: &Progress,
    ) -> Result<(), EndpointError> {
        let digest = descriptor.digest().to_string();
        layout::check_digest(&digest).map_err(EndpointError::Fatal)?;
        if self.store.contains(&digest) {
            emit(
                progress,
                PullEvent::LayerDone {
                    digest,
                    cached: true,
                },
            );
            return Ok(());
        }
        let oci_descriptor = OciDescriptor {
            media_type: descriptor.media_type().to_string(),
            digest: digest.clone(),
            size: descriptor.size() as i64,
            ..Default::default()
        };
        let total = descriptor.size();
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self
                .download_once(client, at, &oci_descriptor, total, progress)
                .await
            {
                Ok(()) => break,
                Err(DownloadError::Transient(reason)) if attempt < ATTEMPTS => {
                    tracing::debug!(%digest, attempt, %reason, "blob download failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(DownloadError::Transient(reason)) => {
                    return Err(EndpointError::TryNext(format!("blob {digest}: {reason}")))
                }
                Err(DownloadError::Fatal(reason)) => {
                    return Err(EndpointError::Fatal(format!("blob {digest}: {reason}")))
                }
            }
        }
        emit(
            progress,
            PullEvent::LayerDone {
                digest,
                cached: false,
            },
        );
        Ok(())
    }

    async fn download_once(
        &self,
        client: &Client,
        at: &Reference,
        descriptor: &OciDescriptor,
        total: u64,
        progress: &Progress,
    ) -> Result<(), DownloadError> {
        let digest = &descriptor.digest;
        let mut stream = client.pull_blob_stream(at, descriptor).await.map_err(|e| {
            if transient(&e) {
                DownloadError::Transient(describe(&e))
            } else {
                DownloadError::Fatal(describe(&e))
            }
        })?;
        if let Some(length) = stream.content_length.filter(|&l| l != total) {
            return Err(DownloadError::Fatal(format!(
                "size mismatch: the manifest states {total} bytes, the registry announces {length}"
            )));
        }
        let partial = self
            .store
            .new_partial()
            .map_err(|e| DownloadError::Fatal(format!("cannot create a download file: {e}")))?;
        let mut file = tokio::fs::File::from_std(
            partial
                .reopen()
                .map_err(|e| DownloadError::Fatal(e.to_string()))?,
        );
        let mut hasher = Sha256::new();
        let mut downloaded = 0u64;
        let mut reported = 0u64;
        while let Some(chunk) = stream.stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // oci-client's own check of the digest ends the stream with a DigestError.
                Err(e)
                    if e.get_ref()
                        .is_some_and(|inner| inner.downcast_ref::<DigestError>().is_some()) =>
                {
                    return Err(DownloadError::Fatal(format!("digest mismatch: {e}")))
                }
                Err(e) => return Err(DownloadError::Transient(e.to_string())),
            };
            downloaded += chunk.len() as u64;
            if downloaded > total {
                // A registry that streams forever is cut off here.
                return Err(DownloadError::Fatal(format!(
                    "size mismatch: the registry sent more than the {total} bytes the manifest states; cut off"
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| DownloadError::Fatal(format!("writing to the image cache: {e}")))?;
            if downloaded - reported >= (1 << 20) {
                reported = downloaded;
                emit(
                    progress,
                    PullEvent::Progress {
                        digest: digest.clone(),
                        downloaded,
                        total,
                    },
                );
            }
        }
        file.flush()
            .await
            .map_err(|e| DownloadError::Fatal(format!("writing to the image cache: {e}")))?;
        file.sync_all()
            .await
            .map_err(|e| DownloadError::Fatal(format!("writing to the image cache: {e}")))?;
        if downloaded != total {
            return Err(DownloadError::Fatal(format!(
                "size mismatch: the manifest states {total} bytes, the registry sent {downloaded}"
            )));
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if &actual != digest {
            return Err(DownloadError::Fatal(format!(
                "digest mismatch: the content served hashes to {actual}"
            )));
        }
        self.store
            .commit(partial, digest)
            .map_err(|e| DownloadError::Fatal(format!("storing the blob: {e}")))?;
        emit(
            progress,
            PullEvent::Progress {
                digest: digest.clone(),
                downloaded,
                total,
            },
        );
        Ok(())
    }
}

/// Why a manifest could not be fetched.
#[derive(Debug, thiserror::Error)]
enum ManifestError {
    /// The registry refused or could not be reached.
    #[error(transparent)]
    Registry(#[from] OciDistributionError),
    /// The manifest is larger than `limit` ([`metadata::MAX_METADATA_BYTES`]); `length` is
    /// what the registry announced, if it did (it was read no further than the limit).
    #[error("the manifest is {} bytes long: an image's metadata may have at most {limit} bytes; cut off", size_text(*.length, *.limit))]
    TooLarge { length: Option<u64>, limit: u64 },
}

/// `length`, or "over `limit`" when the body was cut off before its end.
fn size_text(length: Option<u64>, limit: u64) -> String {
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

/// Fetches manifests with a size cap, authenticated as oci-client negotiated.
struct ManifestFetch<'a> {
    http: &'a reqwest::Client,
    endpoint: &'a Endpoint,
    auth: &'a RegistryAuth,
    /// The bearer token oci-client obtained, if the registry wants one.
    token: Option<&'a str>,
}

impl ManifestFetch<'_> {
    /// The manifest `at` names (by digest, else tag); [`ManifestError::TooLarge`] when it is
    /// larger than [`metadata::MAX_METADATA_BYTES`] (read no further than that).
    async fn get(&self, at: &Reference) -> Result<Vec<u8>, ManifestError> {
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

enum EndpointError {
    /// This source does not have the image or cannot be reached: try the next one.
    TryNext(String),
    /// The image is broken or access is refused: stop.
    Fatal(String),
}

impl From<PullError> for EndpointError {
    fn from(e: PullError) -> Self {
        EndpointError::Fatal(e.to_string())
    }
}

enum DownloadError {
    Transient(String),
    Fatal(String),
}

fn media_type_of(bytes: &[u8]) -> Option<String> {
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

fn is_index(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// The index entry for this host's platform (linux and our architecture).
fn select_platform(index: &ImageIndex) -> Result<Descriptor, EndpointError> {
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
        EndpointError::Fatal(format!(
            "the image has no linux/{} variant (it offers: {})",
            arch,
            if offered.is_empty() {
                "none".into()
            } else {
                offered.join(", ")
            }
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_manifest_is_named_as_before_and_not_retried() {
        let limit = metadata::MAX_METADATA_BYTES;
        let announced = ManifestError::TooLarge {
            length: Some(limit + 1),
            limit,
        };
        assert_eq!(
            announced.to_string(),
            format!("the manifest is {} bytes long: an image's metadata may have at most {limit} bytes; cut off", limit + 1)
        );
        let cut_off = ManifestError::TooLarge {
            length: None,
            limit: 4194304,
        };
        assert_eq!(
            cut_off.to_string(),
            "the manifest is over 4194304 bytes long: an image's metadata may have at most 4194304 bytes; cut off"
        );
        assert!(!cut_off.transient());
    }

    #[test]
    fn references_are_normalised_as_docker_does() {
        let r = parse_reference("python:slim").unwrap();
        assert_eq!(canonical(&r), "docker.io/library/python:slim");
        let r = parse_reference("alpine").unwrap();
        assert_eq!(canonical(&r), "docker.io/library/alpine:latest");
        let r = parse_reference("127.0.0.1:5000/team/app:1").unwrap();
        assert_eq!(
            (r.registry(), r.repository()),
            ("127.0.0.1:5000", "team/app")
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = parse_reference(&format!("ghcr.io/org/x@{digest}")).unwrap();
        assert_eq!(r.digest(), Some(digest.as_str()));
        for bad in ["", "UPPER/case", "a b", "x@sha256:zz"] {
            let err = parse_reference(bad).unwrap_err().to_string();
            assert!(err.contains("reference"), "{bad}: {err}");
        }
    }

    #[test]
    fn mirrors_parse_and_plain_http_is_only_for_loopback() {
        let m = parse_mirrors_env("docker.io=http://127.0.0.1:5000, ghcr.io=https://m.example,docker.io=http://localhost:6000").unwrap();
        assert_eq!(
            m["docker.io"],
            vec!["http://127.0.0.1:5000", "http://localhost:6000"]
        );
        assert!(parse_mirrors_env("nonsense").is_err());
        let options = RegistryOptions::default();
        assert!(
            mirror_endpoint("docker.io", "http://127.0.0.1:5000", &options)
                .unwrap()
                .http
        );
        let err = mirror_endpoint("docker.io", "http://10.1.2.3:5000", &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("insecure=True"), "{err}");
        let allowed = RegistryOptions {
            image_registries: vec![ImageRegistry {
                host: "10.1.2.3:5000".into(),
                insecure: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(mirror_endpoint("docker.io", "http://10.1.2.3:5000", &allowed).is_ok());
        assert!(
            is_loopback("[::1]:5000") && is_loopback("localhost") && !is_loopback("example.com")
        );
    }
}
