//! Host-side log files that the guest can make a process write: the serial console, QEMU's own
//! diagnostics (`vmm.log`) and passt's. The guest controls how much goes into each, so none is
//! a file the writer appends to without end: the writer gets a pipe, and an engine task drains
//! it into a [`RotatingLog`] (`name` and `name.1`, each at most a fixed size). Crash paths read
//! only the end of these files ([`tail`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

use crate::error::{IoContext, Result};

/// Bytes of the serial console kept in each of `console.log` and `console.log.1`.
pub const CONSOLE_LOG_BYTES: u64 = 1 << 20;
/// Bytes kept in each of a helper process's log files (`vmm.log`, `passt.log`, and `.1`).
pub const PROCESS_LOG_BYTES: u64 = 256 << 10;
/// The most bytes [`tail`] reads, from the end of the log.
const TAIL_BYTES: u64 = 64 << 10;
/// The most characters [`tail`] returns.
const TAIL_CHARS: usize = 4096;

/// The file a log rotates into: `path` with `.1` appended.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// A log file that never holds more than `max` bytes: when it is full it becomes `<path>.1`
/// (replacing the previous one) and a new, empty `<path>` is started.
pub struct RotatingLog {
    path: PathBuf,
    max: u64,
    file: File,
    written: u64,
}

impl RotatingLog {
    /// Starts an empty log at `path` (an old `<path>.1` is removed).
    pub fn create(path: &Path, max: u64) -> std::io::Result<RotatingLog> {
        assert!(max > 0, "a log needs room for at least one byte");
        match std::fs::remove_file(rotated(path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(RotatingLog {
            path: path.to_owned(),
            max,
            file: File::create(path)?,
            written: 0,
        })
    }

    pub fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.written >= self.max {
                std::fs::rename(&self.path, rotated(&self.path))?;
                self.file = File::create(&self.path)?;
                self.written = 0;
            }
            let n = data.len().min((self.max - self.written) as usize);
            self.file.write_all(&data[..n])?;
            self.written += n as u64;
            data = &data[n..];
        }
        Ok(())
    }
}

/// Drains `source` into `log` until its writers close it. Once the log cannot be written (its
/// directory was removed, the disk is full) the rest is read and dropped, so the writer never
/// blocks on a full pipe.
pub fn drain<R>(mut source: R, mut log: RotatingLog) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 << 10];
        let mut failed = false;
        loop {
            let n = match source.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !failed {
                if let Err(error) = log.write(&buffer[..n]) {
                    tracing::warn!(path = %log.path.display(), %error, "cannot write a log: the rest of it is dropped");
                    failed = true;
                }
            }
        }
    })
}

/// A pipe drained into a [`RotatingLog`] at `path` of at most `max` bytes per file; returns
/// the pipe's writing end (for a child's stdout or stderr) and the draining task, which ends
/// once every writer has closed the pipe. Needs a tokio runtime.
pub fn capped_pipe(path: &Path, max: u64) -> Result<(OwnedFd, JoinHandle<()>)> {
    let log = RotatingLog::create(path, max).context(|| format!("create {}", path.display()))?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fresh descriptors that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error())
            .context(|| format!("pipe for {}", path.display()));
    }
    // SAFETY: fresh descriptors owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)
        .context(|| format!("pipe for {}", path.display()))?;
    Ok((write_end, drain(receiver, log)))
}

/// The last `lines` non-empty lines of a log and the file it rotated into, reading at most
/// the last 64 KiB and returning at most 4096 characters, control characters replaced: this
/// text comes from the guest and goes into error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let mut bytes = read_end(path, TAIL_BYTES);
    if (bytes.len() as u64) < TAIL_BYTES {
        let mut older = read_end(&rotated(path), TAIL_BYTES - bytes.len() as u64);
        older.append(&mut bytes);
        bytes = older;
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let kept = all[all.len().saturating_sub(lines)..].join("\n");
    let clean: Vec<char> = kept
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    clean[clean.len().saturating_sub(TAIL_CHARS)..]
        .iter()
        .collect()
}

/// At most the last `limit` bytes of `path` (nothing if it cannot be read).
fn read_end(path: &Path, limit: u64) -> Vec<u8> {
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut data = Vec::new();
    if file
        .seek(SeekFrom::Start(size.saturating_sub(limit)))
        .is_ok()
    {
        let _ = file.take(limit).read_to_end(&mut data);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn a_rotating_log_keeps_at_most_two_files_of_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(rotated(&path), "stale from the last run").unwrap();
        let mut log = RotatingLog::create(&path, 1000).unwrap();
        assert!(
            !rotated(&path).exists(),
            "a new log starts without the old rotation"
        );
        for i in 0..5000 {
            log.write(format!("line {i}\n").as_bytes()).unwrap();
        }
        log.write(&[b'x'; 10_000]).unwrap();
        log.write(b"\nthe end\n").unwrap();
        assert!(size(&path) <= 1000 && size(&rotated(&path)) == 1000);
        assert_eq!(tail(&path, 1), "the end");
    }

    #[test]
    fn tail_reads_across_the_rotation_and_cleans_what_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.log");
        let mut log = RotatingLog::create(&path, 24).unwrap();
        log.write(b"first line\nsecond\x1b[31m red\nthird\n")
            .unwrap();
        assert!(size(&path) < 24, "the log rotated once");
        assert_eq!(tail(&path, 2), "second\u{fffd}[31m red\nthird");
        assert_eq!(tail(&dir.path().join("missing.log"), 5), "");
        // A huge last line is cut to its end.
        std::fs::write(&path, vec![b'y'; 1 << 20]).unwrap();
        assert_eq!(tail(&path, 3).len(), TAIL_CHARS);
    }

    #[tokio::test]
    async fn a_capped_pipe_drains_everything_and_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let (writer, task) = capped_pipe(&path, 4096).unwrap();
        let mut writer = File::from(writer);
        let guest = std::thread::spawn(move || {
            for i in 0..100_000 {
                writeln!(writer, "guest line {i}").unwrap();
            }
        });
        task.await.unwrap();
        guest.join().unwrap();
        assert!(size(&path) <= 4096 && size(&rotated(&path)) <= 4096);
        assert_eq!(tail(&path, 1), "guest line 99999");
    }
}
