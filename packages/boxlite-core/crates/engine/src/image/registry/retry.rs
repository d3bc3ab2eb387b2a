//! Registry failures: which are transient (network trouble, an overloaded server) and worth
//! another attempt with backoff, which mean "not here", and how each reads for the user.

use std::time::Duration;

use oci_client::errors::OciDistributionError;

/// Attempts per request on transient failures (connection errors, 5xx, 429).
pub(super) const ATTEMPTS: u32 = 4;
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Is this failure worth another attempt (network trouble, overloaded server)?
pub(super) fn transient(err: &OciDistributionError) -> bool {
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
pub(super) trait Transient: std::fmt::Display {
    fn transient(&self) -> bool;
}

impl Transient for OciDistributionError {
    fn transient(&self) -> bool {
        transient(self)
    }
}

/// Runs `op` up to [`ATTEMPTS`] times with exponential backoff while it fails transiently.
pub(super) async fn retry<T, E, F, Fut>(what: &str, mut op: F) -> Result<T, E>
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
pub(super) fn describe(err: &OciDistributionError) -> String {
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

pub(super) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
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

pub(super) fn not_found(err: &OciDistributionError) -> bool {
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
