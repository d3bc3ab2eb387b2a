//! File operations on a running box (`read_file`, `write_file`, `list_dir`, `stat`): each is
//! one of the agent's file builtins, run like an execution (as the image's user, relative
//! paths from the box's working directory), so no shell or program of the image is involved
//! and no file content goes through argv. What the box sends back is bounded: a read by its
//! `max_bytes`, a listing by [`MAX_LIST_ENTRIES`] descriptions of bounded size.

use std::sync::Arc;
use std::time::Duration;

use boxlite_protocol::files::{decode_file_infos, FileFailure, FileInfo, MAX_FILE_INFO_LEN};
use boxlite_protocol::Builtin;

use super::execution::STDIN_CHUNK;
use super::{ExecSpec, LiteBox};
use crate::error::{Error, Result};

/// Most entries [`LiteBox::list_dir`] returns; a larger directory is refused.
pub const MAX_LIST_ENTRIES: u64 = 100_000;

/// How long one file operation may run in the box (a read or write of many megabytes under
/// emulation included) before it is killed and reported.
const FILE_OP_TIMEOUT: Duration = Duration::from_secs(300);

/// Bytes of a failed operation's message kept (the box writes it).
const MESSAGE_CHARS: usize = 4096;

/// How [`LiteBox::write_file`] creates and replaces files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Permission bits of a file the write creates (an existing file keeps its own).
    pub mode: u32,
    /// Create missing parent directories.
    pub parents: bool,
    /// Fail (`AlreadyExists`) when the file exists, instead of replacing its content.
    pub exclusive: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            mode: 0o644,
            parents: false,
            exclusive: false,
        }
    }
}

impl LiteBox {
    /// The content of the regular file `path` from byte `offset`: `length` bytes at most
    /// (no more than `max_bytes`), or all the rest, refused (`TooLarge`) beyond `max_bytes`.
    pub async fn read_file(
        self: &Arc<Self>,
        path: &str,
        offset: u64,
        length: Option<u64>,
        max_bytes: u64,
    ) -> Result<Vec<u8>> {
        let op = Builtin::ReadFile {
            path: checked_path("read_file", path)?.to_owned(),
            offset,
            length,
            max_bytes,
        };
        let cap = length.map_or(max_bytes, |n| n.min(max_bytes));
        self.run_file_op("read_file", path, op, None, cap).await
    }

    /// Writes `data` to `path` (see [`WriteOptions`]).
    pub async fn write_file(
        self: &Arc<Self>,
        path: &str,
        data: &[u8],
        options: WriteOptions,
    ) -> Result<()> {
        if options.mode > 0o7777 {
            return Err(Error::InvalidOption(format!(
                "write_file: mode {:#o} is not a permission mode (at most 0o7777)",
                options.mode
            )));
        }
        let op = Builtin::WriteFile {
            path: checked_path("write_file", path)?.to_owned(),
            mode: options.mode,
            parents: options.parents,
            exclusive: options.exclusive,
        };
        self.run_file_op("write_file", path, op, Some(data), 0)
            .await
            .map(drop)
    }

    /// The entries of directory `path`, sorted by name (symlinks described, not followed).
    pub async fn list_dir(self: &Arc<Self>, path: &str) -> Result<Vec<FileInfo>> {
        let op = Builtin::ListDir {
            path: checked_path("list_dir", path)?.to_owned(),
            max_entries: MAX_LIST_ENTRIES,
        };
        let cap = MAX_LIST_ENTRIES * (MAX_FILE_INFO_LEN as u64 + 4);
        let out = self.run_file_op("list_dir", path, op, None, cap).await?;
        decode_file_infos(&out).map_err(|e| self.garbled("list_dir", path, e))
    }

    /// What `path` is (the symlink itself unless `follow_symlinks`).
    pub async fn stat(self: &Arc<Self>, path: &str, follow_symlinks: bool) -> Result<FileInfo> {
        let op = Builtin::Stat {
            path: checked_path("stat", path)?.to_owned(),
            follow_symlinks,
        };
        let cap = MAX_FILE_INFO_LEN as u64 + 4;
        let out = self.run_file_op("stat", path, op, None, cap).await?;
        let mut infos = decode_file_infos(&out).map_err(|e| self.garbled("stat", path, e))?;
        match (infos.pop(), infos.is_empty()) {
            (Some(info), true) => Ok(info),
            _ => Err(self.garbled("stat", path, "not exactly one description")),
        }
    }

    /// Runs one file builtin, feeding it `stdin`, and returns its stdout (at most
    /// `max_output` bytes: more is an error, as the box was asked for no more).
    async fn run_file_op(
        self: &Arc<Self>,
        what: &str,
        path: &str,
        op: Builtin,
        stdin: Option<&[u8]>,
        max_output: u64,
    ) -> Result<Vec<u8>> {
        let execution = self
            .exec(ExecSpec {
                program: format!("boxlite:{what}"),
                stdin: stdin.is_some(),
                timeout: Some(FILE_OP_TIMEOUT),
                builtin: Some(op),
                max_output_bytes: Some(max_output.max(MESSAGE_CHARS as u64)),
                ..Default::default()
            })
            .await?;
        if let Some(data) = stdin {
            execution.claim_stdin()?;
            for chunk in data.chunks(STDIN_CHUNK) {
                if let Err(e) = execution.write_stdin(chunk.to_vec()).await {
                    // The builtin stopped reading (it failed): its exit says why, below.
                    if matches!(e, Error::StdinClosed(_)) {
                        break;
                    }
                    return Err(e);
                }
            }
            // Closing fails only when the builtin already ended, which its exit reports.
            let _ = execution.close_stdin().await;
        }
        let output = execution.wait().await?;
        if output.timed_out {
            return Err(Error::File {
                failure: FileFailure::Other,
                message: format!(
                    "{what} {path}: did not finish within {} s in box {}; it was stopped",
                    FILE_OP_TIMEOUT.as_secs(),
                    self.id
                ),
            });
        }
        if output.exit_code != 0 {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let message: String = stderr.trim().chars().take(MESSAGE_CHARS).collect();
            return Err(Error::File {
                failure: FileFailure::from_exit_code(output.exit_code),
                message: format!("{what}: {message} (in box {})", self.id),
            });
        }
        if output.stdout_dropped > 0 || output.stdout.len() as u64 > max_output {
            return Err(Error::File {
                failure: FileFailure::TooLarge,
                message: format!(
                    "{what} {path}: the box sent more than the {max_output} bytes asked for"
                ),
            });
        }
        Ok(output.stdout)
    }

    fn garbled(&self, what: &str, path: &str, why: impl std::fmt::Display) -> Error {
        Error::Channel {
            id: self.id.clone(),
            reason: format!("{what} {path}: the box's answer is malformed: {why}"),
        }
    }
}

fn checked_path<'a>(what: &str, path: &'a str) -> Result<&'a str> {
    if path.is_empty() || path.contains('\0') {
        return Err(Error::InvalidOption(format!(
            "{what}: {path:?} is not a path (empty, or with a NUL byte)"
        )));
    }
    Ok(path)
}
