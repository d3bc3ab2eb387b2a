//! Where a pull goes: the mirrors of a registry (tried in order) and the registry itself,
//! plain HTTP only for loopback hosts and hosts configured `insecure`; the clients and the
//! credentials for one source (credentials only for the host they are configured for).

use std::collections::BTreeMap;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::error::SourceError;
use super::{EndpointError, ImageRegistry, PullError, Puller, RegistryOptions};

pub(super) fn is_loopback(host: &str) -> bool {
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
        let (registry, url) = item.split_once('=').ok_or_else(|| PullError::MirrorsEnv {
            item: item.to_owned(),
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
pub(super) struct Endpoint {
    /// `host[:port]` as requests address it.
    pub(super) host: String,
    pub(super) http: bool,
    /// Shown in messages: `http://127.0.0.1:5000 (mirror of docker.io)`.
    pub(super) label: String,
    pub(super) mirror: bool,
}

/// Splits a mirror URL into host and scheme; refuses plain HTTP to non-loopback hosts that are
/// not configured `insecure`.
pub(super) fn mirror_endpoint(
    registry: &str,
    url: &str,
    options: &RegistryOptions,
) -> Result<Endpoint, PullError> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(PullError::MirrorNotHost {
            url: url.to_owned(),
            registry: registry.to_owned(),
        });
    }
    let http = match scheme {
        "http" => true,
        "https" => false,
        other => {
            return Err(PullError::MirrorScheme {
                url: url.to_owned(),
                registry: registry.to_owned(),
                scheme: other.to_owned(),
            })
        }
    };
    if http && !is_loopback(host) && !host_settings(options, host).is_some_and(|r| r.insecure) {
        return Err(PullError::MirrorPlainHttp {
            url: url.to_owned(),
            registry: registry.to_owned(),
            host: host.to_owned(),
        });
    }
    Ok(Endpoint {
        host: host.to_owned(),
        http,
        label: format!("{scheme}://{host} (mirror of {registry})"),
        mirror: true,
    })
}

pub(super) fn host_settings<'a>(
    options: &'a RegistryOptions,
    host: &str,
) -> Option<&'a ImageRegistry> {
    options.image_registries.iter().find(|r| r.host == host)
}

pub(super) fn endpoints(
    options: &RegistryOptions,
    reference: &Reference,
) -> Result<Vec<Endpoint>, PullError> {
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

impl Puller {
    pub(super) fn client(&self, endpoint: &Endpoint) -> Client {
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
    ///
    /// [`metadata::MAX_METADATA_BYTES`]: crate::image::metadata::MAX_METADATA_BYTES
    pub(super) fn http_client(&self) -> Result<reqwest::Client, EndpointError> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("boxlite/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EndpointError::Fatal(SourceError::HttpClient(e)))
    }

    pub(super) fn auth_for(&self, endpoint: &Endpoint, reference: &Reference) -> RegistryAuth {
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
}
