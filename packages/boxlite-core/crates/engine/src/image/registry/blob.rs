//! One blob into the store: skipped when it is there already, otherwise streamed into a
//! partial file, cut off past its descriptor's size, hashed on the way and renamed into the
//! store only when the size and digest match; transient failures are retried with backoff.

use futures::StreamExt as _;
use oci_client::errors::DigestError;
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference};
use oci_spec::image::Descriptor;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::error::{DownloadCause, DownloadError, EndpointError, SourceError};
use super::retry::{transient, ATTEMPTS, FIRST_BACKOFF};
use super::{emit, Progress, PullEvent, Puller};
use crate::image::layout;

impl Puller {
    /// Downloads one blob into the store unless it is there; verifies it on the way.
    pub(super) async fn fetch_blob(
        &self,
        client: &Client,
        at: &Reference,
        descriptor: &Descriptor,
        progress: &Progress,
    ) -> Result<(), EndpointError> {
        let digest = descriptor.digest().to_string();
        layout::check_digest(&digest).map_err(|e| EndpointError::Fatal(e.into()))?;
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
                Err(DownloadError::Transient(source)) => {
                    return Err(EndpointError::TryNext(SourceError::Blob { digest, source }))
                }
                Err(DownloadError::Fatal(source)) => {
                    return Err(EndpointError::Fatal(SourceError::Blob { digest, source }))
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

    pub(super) async fn download_once(
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
                DownloadError::Transient(DownloadCause::Registry(e))
            } else {
                DownloadError::Fatal(DownloadCause::Registry(e))
            }
        })?;
        if let Some(length) = stream.content_length.filter(|&l| l != total) {
            return Err(DownloadError::Fatal(DownloadCause::AnnouncedSize {
                total,
                length,
            }));
        }
        let partial = self
            .store
            .new_partial()
            .map_err(|e| DownloadError::Fatal(DownloadCause::CreateFile(e)))?;
        let mut file = tokio::fs::File::from_std(
            partial
                .reopen()
                .map_err(|e| DownloadError::Fatal(DownloadCause::Reopen(e)))?,
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
                    return Err(DownloadError::Fatal(DownloadCause::StreamDigest(e)))
                }
                Err(e) => return Err(DownloadError::Transient(DownloadCause::Stream(e))),
            };
            downloaded += chunk.len() as u64;
            if downloaded > total {
                // A registry that streams forever is cut off here.
                return Err(DownloadError::Fatal(DownloadCause::TooLong { total }));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| DownloadError::Fatal(DownloadCause::Write(e)))?;
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
            .map_err(|e| DownloadError::Fatal(DownloadCause::Write(e)))?;
        file.sync_all()
            .await
            .map_err(|e| DownloadError::Fatal(DownloadCause::Write(e)))?;
        if downloaded != total {
            return Err(DownloadError::Fatal(DownloadCause::Size {
                total,
                downloaded,
            }));
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if &actual != digest {
            return Err(DownloadError::Fatal(DownloadCause::Digest { actual }));
        }
        self.store
            .commit(partial, digest)
            .map_err(|e| DownloadError::Fatal(DownloadCause::Store(e)))?;
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
