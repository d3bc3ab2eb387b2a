//! Copying files in and out of a box (`copy_in`, `copy_out`): tar streams through the agent's
//! pack/unpack builtins, bridged to blocking archive code by channel reader/writer helpers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use boxlite_protocol::{archive, Builtin, OutputStream};
use tokio::sync::mpsc;

use super::execution::STDIN_CHUNK;
use super::{ExecOutput, ExecSpec, Execution, LiteBox};
use crate::error::{Error, IoContext, Result};

impl LiteBox {
    /// Copies a host file or directory tree into the box, keeping modes (and owners when
    /// the caller may set them): to `guest_path/<name>` when `guest_path` is an existing
    /// directory, else to `guest_path` itself.
    pub async fn copy_in(self: &Arc<Self>, host_path: &Path, guest_path: &str) -> Result<()> {
        if !guest_path.starts_with('/') {
            return Err(Error::InvalidOption(format!(
                "copy_in: the box path {guest_path:?} must be absolute"
            )));
        }
        // A missing source fails here, before anything starts in the box.
        std::fs::symlink_metadata(host_path)
            .context(|| format!("copy_in: {}", host_path.display()))?;
        let name = host_path
            .file_name()
            .ok_or_else(|| {
                Error::InvalidOption(format!(
                    "copy_in: {} has no file name to copy",
                    host_path.display()
                ))
            })?
            .to_string_lossy()
            .into_owned();
        let execution = self
            .exec(ExecSpec {
                program: "boxlite:unpack".into(),
                stdin: true,
                builtin: Some(Builtin::Unpack {
                    dest: guest_path.to_owned(),
                    name: name.clone(),
                }),
                ..Default::default()
            })
            .await?;
        execution.claim_stdin()?;
        // The archive is written on a blocking thread into a bounded channel, so a large tree
        // streams into the box without being held in memory.
        let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(4);
        let source = host_path.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || {
            let sink = ChannelWriter { tx: tx.clone() };
            let built = archive::pack_item(
                std::io::BufWriter::with_capacity(STDIN_CHUNK, sink),
                &source,
                std::ffi::OsStr::new(&name),
            );
            if let Err(e) = built {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let mut failure = None;
        let mut ended_early = false;
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Ok(chunk) => {
                    if let Err(e) = execution.write_stdin(chunk).await {
                        // The unpacking side gave up; its stderr says why (below).
                        if matches!(e, Error::StdinClosed(_)) {
                            ended_early = true;
                            break;
                        }
                        return Err(e);
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(rx);
        let _ = writer.await;
        if let Some(e) = failure {
            let _ = execution.kill().await;
            let _ = execution.wait().await;
            return Err(Error::Copy(format!(
                "copy_in: reading {}: {e}",
                host_path.display()
            )));
        }
        if !ended_early {
            execution.close_stdin().await?;
        }
        let output = execution.wait().await?;
        if output.exit_code != 0 || ended_early {
            return Err(Error::Copy(format!(
                "copy_in of {} to {guest_path} failed in the box: {}",
                host_path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Copies a file or directory tree out of the box: to `host_path/<name>` when `host_path`
    /// is an existing directory, else to `host_path` itself.
    ///
    /// The box's tar stream is untrusted: it is unpacked confined to that destination
    /// ([`archive::UnpackPolicy::confined`]: nothing written through a symlink, hard links only
    /// within the copy, no special files, permission bits only), at most
    /// [`BoxOptions::copy_out_max_bytes`](crate::options::BoxOptions::copy_out_max_bytes) of it
    /// and never beyond the destination's free space.
    pub async fn copy_out(self: &Arc<Self>, guest_path: &str, host_path: &Path) -> Result<()> {
        if !guest_path.starts_with('/') {
            return Err(Error::InvalidOption(format!(
                "copy_out: the box path {guest_path:?} must be absolute"
            )));
        }
        let target = if host_path.is_dir() {
            let name = Path::new(guest_path)
                .file_name()
                .map_or_else(|| "root".into(), |n| n.to_os_string());
            host_path.join(name)
        } else {
            host_path.to_path_buf()
        };
        let execution = Arc::new(
            self.exec(ExecSpec {
                program: "boxlite:pack".into(),
                builtin: Some(Builtin::Pack {
                    path: guest_path.to_owned(),
                }),
                ..Default::default()
            })
            .await?,
        );
        // Unpack on a blocking thread as the stream arrives.
        let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
        let unpack_target = target.clone();
        let limit = self.options.copy_out_max_bytes;
        let unpacker = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                current: std::io::Cursor::new(Vec::new()),
            };
            archive::unpack_item(
                reader,
                &unpack_target,
                &archive::UnpackPolicy::confined(limit),
            )
        });
        // Until the stream ends, or the unpacker stops taking it (the archive ended, or it
        // was refused).
        // A box that stops sending (while still answering probes) is given up on.
        let mut unpacker_stopped = false;
        let mut stalled = false;
        loop {
            let next =
                tokio::time::timeout(COPY_OUT_IDLE, execution.read_output(OutputStream::Stdout))
                    .await;
            let Ok(next) = next else {
                stalled = true;
                break;
            };
            let Some(chunk) = next? else { break };
            if tx.send(chunk).await.is_err() {
                unpacker_stopped = true;
                break;
            }
        }
        drop(tx);
        let unpacked = unpacker
            .await
            .map_err(|e| Error::Copy(format!("copy_out: {e}")))?;
        // What the box does after its archive cannot change the copy: it gets a moment and a
        // little output to finish, then it is killed (at once when it stalled, or when its
        // archive was refused).
        let finished = if stalled || (unpacked.is_err() && unpacker_stopped) {
            None
        } else {
            tokio::time::timeout(COPY_OUT_FINISH, finish_copy_out(&execution))
                .await
                .ok()
                .flatten()
        };
        if finished.is_none() {
            let _ = execution.kill().await;
            let _ = tokio::time::timeout(COPY_OUT_FINISH, execution.wait()).await;
        }
        if stalled {
            return Err(Error::Copy(format!(
                "copy_out of {guest_path} to {}: the box sent nothing for {} s; the copy was stopped",
                target.display(),
                COPY_OUT_IDLE.as_secs()
            )));
        }
        let where_to = |e: &dyn std::fmt::Display| {
            format!("copy_out of {guest_path} to {}: {e}", target.display())
        };
        if let Some(output) = &finished {
            if output.exit_code != 0 {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let stderr: String = stderr.trim().chars().take(4096).collect();
                return Err(Error::Copy(format!("copy_out of {guest_path}: {stderr}")));
            }
        }
        match unpacked {
            Err(e @ archive::UnpackError::TooLarge { .. }) => Err(Error::Copy(format!(
                "{}; raise BoxOptions.copy_out_max_bytes (now {limit}) to copy more",
                where_to(&e)
            ))),
            Err(e) => Err(Error::Copy(where_to(&e))),
            Ok(_) if finished.is_none() => Err(Error::Copy(where_to(&format!(
                "the box did not end the copy within {} s of its archive's end",
                COPY_OUT_FINISH.as_secs()
            )))),
            Ok(report) => {
                for skipped in &report.skipped {
                    tracing::warn!(id = %self.id, entry = %skipped, "copy_out: special file not copied to the host");
                }
                Ok(())
            }
        }
    }
}

/// How long the box has to end a copy_out once its archive ended (or was refused).
const COPY_OUT_FINISH: Duration = Duration::from_secs(10);

/// How long a copy_out waits for the box's next bytes: a packer reading a file that never
/// ends (`/proc/kmsg`), or a hostile agent holding the stream, must not hold the caller.
const COPY_OUT_IDLE: Duration = Duration::from_secs(30);

/// Output a box may send after its archive's end (the end-of-archive blocks and padding).
const COPY_OUT_TRAILER_BYTES: usize = 64 * 1024;

/// Reads what follows the archive and waits for the pack to exit; `None` when the box sends
/// more than a trailer or the channel fails.
async fn finish_copy_out(execution: &Execution) -> Option<ExecOutput> {
    let mut trailer = 0;
    while let Some(chunk) = execution.read_output(OutputStream::Stdout).await.ok()? {
        trailer += chunk.len();
        if trailer > COPY_OUT_TRAILER_BYTES {
            return None;
        }
    }
    execution.wait().await.ok()
}

/// `Write` into a bounded channel of chunks (a blocking producer feeding async code).
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Vec<u8>>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "copy cancelled"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `Read` from a channel of chunks (async code feeding a blocking consumer).
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    current: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = std::io::Cursor::new(chunk),
                None => return Ok(0),
            }
        }
    }
}
