//! The host-guest wire protocol.
//!
//! One byte stream (a virtio-serial port today, vsock later) carries frames in both directions.
//! A frame is a little-endian `u32` payload length followed by a postcard-encoded message.
//! Executions are multiplexed over the stream by `exec_id`, chosen by the host.
//!
//! The guest speaks first with [`GuestMessage::Hello`]; the host answers with
//! [`HostMessage::Hello`]. (To a guest restored from a snapshot, the host first sends
//! [`HostMessage::HelloAgain`], which asks for that hello.) Each side refuses a peer whose [`PROTOCOL_VERSION`] differs.

use serde::{Deserialize, Serialize};

#[cfg(feature = "archive")]
pub mod archive;
pub mod files;

/// Bumped on every incompatible change of the messages below.
pub const PROTOCOL_VERSION: u32 = 8;

/// The longest hostname the guest kernel takes (`HOST_NAME_MAX`).
pub const HOSTNAME_MAX: usize = 64;

/// Name of the virtio-serial port the agent listens on (`/sys/class/virtio-ports/*/name`).
pub const AGENT_PORT_NAME: &str = "boxlite.agent";

/// Upper bound of one frame's payload; output is chunked well below it.
pub const MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

/// Largest frame the host accepts from the guest: an output chunk with room to spare. A
/// frame's buffer is allocated before it is read, so this bounds what one lying length
/// prefix can make the host allocate.
pub const MAX_GUEST_FRAME_LEN: usize = 256 * 1024;

/// Largest output chunk the agent puts into one frame.
pub const OUTPUT_CHUNK_LEN: usize = 64 * 1024;

/// Output bytes of one execution the agent may send ahead of the host's acknowledgements
/// ([`HostMessage::OutputAck`]). It bounds host memory per execution and keeps one slow
/// consumer from stalling the channel for the others: the agent stops reading that
/// execution's pipes instead, so its process blocks on a full pipe like any writer would.
pub const OUTPUT_WINDOW: u64 = 1024 * 1024;

/// Bytes of fresh randomness the host sends with each hello ([`HostMessage::Hello`]).
pub const ENTROPY_LEN: usize = 2 * ENTROPY_HALF;
/// Half of [`ENTROPY_LEN`]: the largest array serde encodes.
pub const ENTROPY_HALF: usize = 32;

/// Messages from the host to the guest agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostMessage {
    /// Answer to the guest's hello: the host's protocol version and wall-clock time (the guest
    /// sets its clock from it: a box may have no RTC, and a restored one would be stale), and
    /// [`ENTROPY_LEN`] fresh random bytes the guest adds to its kernel's entropy pool and
    /// reseeds its random number generator with before it acts on anything else: two boxes
    /// restored from one snapshot share their kernel's random state up to that point.
    Hello {
        version: u32,
        unix_time_ns: u64,
        /// Fixed size (two halves: serde's arrays stop at 32), so a peer cannot make it large.
        entropy: [[u8; ENTROPY_HALF]; 2],
    },
    /// Start a process.
    Exec(Box<ExecRequest>),
    /// Bytes for an execution's standard input.
    Stdin {
        exec_id: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Close an execution's standard input (EOF for the process).
    CloseStdin { exec_id: u32 },
    /// Send a signal to an execution's process group.
    Signal { exec_id: u32, signal: i32 },
    /// Kill every process the execution started, daemons and reparented descendants included
    /// (its cgroup); the agent reports `Exited` only once none is left.
    KillTree { exec_id: u32 },
    /// The host consumed this many more output bytes of the execution (see [`OUTPUT_WINDOW`]).
    OutputAck { exec_id: u32, bytes: u64 },
    /// New terminal size of a TTY execution.
    ResizeTty { exec_id: u32, rows: u16, cols: u16 },
    /// The box's hostname (at most [`HOSTNAME_MAX`] bytes), sent to a guest restored from a
    /// snapshot before anything else it is asked: it booted as another box (the snapshot's),
    /// whose hostname it still has.
    SetHostname { hostname: String },
    /// The host's wall-clock time, sent when the vCPUs run again after a pause (`resume()`,
    /// the end of a snapshot): the guest's clock stood still meanwhile.
    SetClock { unix_time_ns: u64 },
    /// Whether the guest hands the pages it frees back to the host (free page reporting of the
    /// VM's balloon device), sent to a restored guest: its VMM can give back pages of anonymous
    /// RAM (a booted or hibernated box), not of RAM mapped from a snapshot's memory file
    /// (QEMU refuses to discard a read-only file's pages, and would log each refusal). Also
    /// sent around a snapshot of a running box: off before (so that its restores need not
    /// turn it off, which costs a cold guest some 50 ms), on again after. Turning it off is
    /// done before the agent reads its next message.
    FreePageReporting { enabled: bool },
    /// Sent to a guest restored from a snapshot into a new box: the box gets a boot id of its
    /// own (`/proc/sys/kernel/random/boot_id`, which the kernel fixes once per boot and so
    /// every box restored from one snapshot would share), made from the guest's randomness
    /// after its reseed.
    NewBootId,
    /// Liveness probe; the agent answers with [`GuestMessage::Pong`].
    Ping { token: u64 },
    /// Asks for [`GuestMessage::Metrics`].
    Metrics { token: u64 },
    /// Flush file systems and power the VM off.
    Shutdown,
    /// The host's first message on a connection to a guest restored from a snapshot, whose
    /// agent may still be reading the connection it had when the snapshot was taken and so
    /// never notice this one: the agent answers with its [`GuestMessage::Hello`], unless it
    /// has already said hello on this connection (then it ignores this).
    HelloAgain,
}

/// A process to run inside the box's root file system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub exec_id: u32,
    /// Program name (looked up in the box's `PATH`) or absolute path.
    pub program: String,
    pub args: Vec<String>,
    /// The complete environment of the process (image, box and call variables already merged).
    pub env: Vec<(String, String)>,
    /// Working directory inside the box; created when missing.
    pub working_dir: String,
    /// Keep standard input open for [`HostMessage::Stdin`]; otherwise it reads `/dev/null`.
    pub stdin: bool,
    /// `user[:group]` to run as, names or numbers (names are looked up in the box's
    /// `/etc/passwd` and `/etc/group`); `None` runs as root.
    pub user: Option<String>,
    /// Run on a pseudo-terminal of this size (rows, columns): stdin, stdout and stderr are the
    /// terminal, so all output arrives as stdout.
    pub tty: Option<(u16, u16)>,
    /// Resource limits of the processes the execution starts.
    pub limits: ExecLimits,
    /// Run one of the agent's own operations instead of `program`.
    pub builtin: Option<Builtin>,
}

/// Limits applied to an execution: rlimits on its processes and its cgroup's `pids.max`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecLimits {
    /// `RLIMIT_NOFILE`.
    pub max_open_files: Option<u64>,
    /// `RLIMIT_FSIZE`, in bytes.
    pub max_file_size: Option<u64>,
    /// `pids.max` of the execution's cgroup: processes and threads alive at once.
    pub max_processes: Option<u64>,
    /// `RLIMIT_AS`, in bytes.
    pub max_memory: Option<u64>,
    /// `RLIMIT_CPU`, in seconds.
    pub max_cpu_time: Option<u64>,
}

/// Operations the agent performs itself, in a child chrooted into the box, with the
/// execution's standard streams as their data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Builtin {
    /// Unpack the tar stream read from stdin. Its entries are relative to the copied item,
    /// `.` being the item itself. The item lands at `dest/name` when `dest` is an existing
    /// directory, else at `dest`.
    Unpack { dest: String, name: String },
    /// Write `path` (a file or a directory tree) to stdout as a tar stream whose entries are
    /// relative to it, `.` being `path` itself.
    Pack { path: String },
    /// Write the regular file `path`, from byte `offset`, to stdout: at most `length` bytes
    /// when given, else all the rest, which fails ([`files::FileFailure::TooLarge`]) when it
    /// is more than `max_bytes`, before sending any of it.
    ReadFile {
        path: String,
        offset: u64,
        length: Option<u64>,
        max_bytes: u64,
    },
    /// Write stdin to `path`, created with permission bits `mode` when missing and truncated
    /// otherwise. `parents` creates missing parent directories; `exclusive` fails when `path`
    /// exists.
    WriteFile {
        path: String,
        mode: u32,
        parents: bool,
        exclusive: bool,
    },
    /// Describe the entries of directory `path` on stdout ([`files::FileInfo`] frames, sorted
    /// by name, symlinks not followed). Fails ([`files::FileFailure::TooLarge`]) when it has
    /// more than `max_entries`.
    ListDir { path: String, max_entries: u64 },
    /// Describe `path` on stdout (one [`files::FileInfo`] frame); a symlink itself unless
    /// `follow_symlinks`.
    Stat { path: String, follow_symlinks: bool },
}
/// Messages from the guest agent to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GuestMessage {
    /// First message after the host connects.
    Hello {
        version: u32,
        /// `uname -r` of the guest kernel.
        kernel_release: String,
        /// Guest uptime when the agent became ready, in milliseconds.
        uptime_ms: u64,
    },
    /// A chunk of an execution's output.
    Output {
        exec_id: u32,
        stream: OutputStream,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The execution is over; no more output follows for it.
    Exited { exec_id: u32, status: ExitStatus },
    /// Answer to [`HostMessage::Ping`].
    Pong { token: u64 },
    /// This many more bytes of the execution's standard input reached its process; the host
    /// keeps at most [`OUTPUT_WINDOW`] bytes of stdin unacknowledged.
    StdinAck { exec_id: u32, bytes: u64 },
    /// Answer to [`HostMessage::Metrics`].
    Metrics { token: u64, metrics: GuestMetrics },
    /// A request the agent could not act on (unknown execution, malformed message).
    Error {
        exec_id: Option<u32>,
        message: String,
    },
}

/// Resource use inside the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMetrics {
    /// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
    pub mem_total: u64,
    pub mem_available: u64,
    /// Memory charged to the box's executions (their parent cgroup), in bytes.
    pub mem_used_by_executions: u64,
    /// CPU time of all vCPUs since boot, from `/proc/stat`, in milliseconds.
    pub cpu_user_ms: u64,
    pub cpu_system_ms: u64,
    pub cpu_idle_ms: u64,
    /// Processes alive in the guest, the agent included.
    pub processes: u64,
    pub uptime_ms: u64,
    /// Executions started and currently running.
    pub execs_started: u64,
    pub execs_running: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Exit code of an execution whose program was not found in the box (as a shell reports it).
pub const EXIT_COMMAND_NOT_FOUND: i32 = 127;

/// Exit code of an execution whose program could not be started (not executable, or the
/// agent could not set the process up), as a shell reports it.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// The process exited with this code.
    Code(i32),
    /// The process was killed by this signal.
    Signal(i32),
    /// The process never started: `code` is [`EXIT_COMMAND_NOT_FOUND`] or [`EXIT_CANNOT_EXECUTE`].
    SpawnFailed { code: i32, message: String },
}

impl ExitStatus {
    /// The shell convention: the exit code, or 128 + N for signal N.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Code(c) => *c,
            ExitStatus::Signal(s) => 128 + s,
            ExitStatus::SpawnFailed { code, .. } => *code,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("channel I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {1}-byte limit")]
    FrameTooLarge(usize, usize),
    #[error("malformed message: {0}")]
    Decode(#[from] postcard::Error),
}

/// Encodes a message as one complete frame (length prefix included).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    // Serialise after a placeholder prefix, then patch the length in: one allocation, no copy.
    let mut frame = postcard::to_extend(msg, vec![0u8; 4])?;
    let len = frame.len() - 4;
    if len > MAX_FRAME_LEN {
        return Err(ProtocolError::FrameTooLarge(len, MAX_FRAME_LEN));
    }
    frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(frame)
}

/// Decodes a frame payload (without its length prefix).
pub fn decode_payload<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, ProtocolError> {
    Ok(postcard::from_bytes(payload)?)
}

fn checked_len(prefix: [u8; 4], max: usize) -> Result<usize, ProtocolError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max {
        return Err(ProtocolError::FrameTooLarge(len, max));
    }
    Ok(len)
}

/// Blocking frame I/O, used by the guest agent.
pub mod blocking {
    use super::*;
    use std::io::{Read, Write};

    /// Reads one message; `Ok(None)` on a clean end of stream before a frame starts.
    pub fn read_message<T: for<'de> Deserialize<'de>, R: Read>(
        reader: &mut R,
    ) -> Result<Option<T>, ProtocolError> {
        let mut prefix = [0u8; 4];
        match reader.read_exact(&mut prefix) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut payload = vec![0u8; checked_len(prefix, MAX_FRAME_LEN)?];
        reader.read_exact(&mut payload)?;
        decode_payload(&payload).map(Some)
    }

    pub fn write_message<T: Serialize, W: Write>(
        writer: &mut W,
        msg: &T,
    ) -> Result<(), ProtocolError> {
        writer.write_all(&encode_frame(msg)?)?;
        writer.flush()?;
        Ok(())
    }
}

/// Asynchronous frame I/O on tokio, used by the host engine.
#[cfg(feature = "async")]
pub mod nonblocking {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Reads one message; `Ok(None)` on a clean end of stream before a frame starts.
    pub async fn read_message<T: for<'de> Deserialize<'de>, R: AsyncRead + Unpin>(
        reader: &mut R,
    ) -> Result<Option<T>, ProtocolError> {
        read_message_max(reader, MAX_FRAME_LEN).await
    }

    /// [`read_message`] refusing frames longer than `max` bytes before allocating them.
    pub async fn read_message_max<T: for<'de> Deserialize<'de>, R: AsyncRead + Unpin>(
        reader: &mut R,
        max: usize,
    ) -> Result<Option<T>, ProtocolError> {
        let mut prefix = [0u8; 4];
        match reader.read_exact(&mut prefix).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut payload = vec![0u8; checked_len(prefix, max)?];
        reader.read_exact(&mut payload).await?;
        decode_payload(&payload).map(Some)
    }

    pub async fn write_message<T: Serialize, W: AsyncWrite + Unpin>(
        writer: &mut W,
        msg: &T,
    ) -> Result<(), ProtocolError> {
        writer.write_all(&encode_frame(msg)?).await?;
        writer.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/test_output_bounds.py` forges this frame byte by byte from inside a box.
    #[test]
    fn output_is_variant_1_on_the_wire() {
        let mut wire = Vec::new();
        let output = GuestMessage::Output {
            exec_id: 3,
            stream: OutputStream::Stdout,
            data: b"F".to_vec(),
        };
        blocking::write_message(&mut wire, &output).unwrap();
        assert_eq!(wire, [5, 0, 0, 0, 1, 3, 0, 1, b'F']);
    }

    #[test]
    fn frames_round_trip_through_a_byte_stream() {
        let messages = vec![
            GuestMessage::Hello {
                version: PROTOCOL_VERSION,
                kernel_release: "6.12".into(),
                uptime_ms: 5,
            },
            GuestMessage::Output {
                exec_id: 7,
                stream: OutputStream::Stderr,
                data: vec![0, 255, 10],
            },
            GuestMessage::Exited {
                exec_id: 7,
                status: ExitStatus::Signal(9),
            },
        ];
        let mut wire = Vec::new();
        for m in &messages {
            blocking::write_message(&mut wire, m).unwrap();
        }
        let mut reader = &wire[..];
        let mut back = Vec::new();
        while let Some(m) = blocking::read_message::<GuestMessage, _>(&mut reader).unwrap() {
            back.push(m);
        }
        assert_eq!(back, messages);
    }

    #[test]
    fn oversized_length_prefix_is_rejected_before_allocating() {
        let wire = (u32::MAX).to_le_bytes();
        let err = blocking::read_message::<HostMessage, _>(&mut &wire[..]).unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge(..)), "{err}");
    }

    #[test]
    fn the_host_hello_has_a_fixed_size() {
        let hello = |byte| HostMessage::Hello {
            version: PROTOCOL_VERSION,
            unix_time_ns: 1,
            entropy: [[byte; ENTROPY_HALF]; 2],
        };
        let (zeros, ones) = (
            encode_frame(&hello(0)).unwrap(),
            encode_frame(&hello(0xff)).unwrap(),
        );
        assert_eq!(zeros.len(), ones.len());
        assert!(zeros.len() >= 4 + ENTROPY_LEN);
        let back: HostMessage = decode_payload(&ones[4..]).unwrap();
        assert_eq!(back, hello(0xff));
    }

    #[test]
    fn exit_status_follows_the_shell_convention() {
        assert_eq!(ExitStatus::Code(3).code(), 3);
        assert_eq!(ExitStatus::Signal(9).code(), 137);
        assert_eq!(
            ExitStatus::SpawnFailed {
                code: 127,
                message: String::new()
            }
            .code(),
            127
        );
    }
}
