//! The registry's errors: [`PullError`] (what the image store sees), and inside a pull why a
//! manifest fetch, a source or a blob download failed.

use oci_client::errors::OciDistributionError;

use super::retry::{transient, Transient};

/// Why a pull failed; the image store turns it into an error naming the image.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}
/// Why a manifest could not be fetched.
#[derive(Debug, thiserror::Error)]
pub(super) enum ManifestError {
    /// The registry refused or could not be reached.
    #[error(transparent)]
    Registry(#[from] OciDistributionError),
    /// The manifest is larger than `limit` ([`metadata::MAX_METADATA_BYTES`]); `length` is
    /// what the registry announced, if it did (it was read no further than the limit).
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
pub(super) enum EndpointError {
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

pub(super) enum DownloadError {
    Transient(String),
    Fatal(String),
}
