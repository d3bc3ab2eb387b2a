//! The supervisor in a process of its own, for boxes that outlive the process starting them.
//!
//! The supervisor thread dies with the engine process; passt's trapped calls then fail
//! (`ENOSYS`) and a kept box that is still running (`boxlite run -d`, a box left running by a
//! program that exited) loses its outbound network and DNS. For kept boxes the engine
//! therefore hands passt's seccomp listener to a small process of its own instead: a command
//! the embedding program registers once ([`set_supervisor_command`]; the Python package runs
//! its interpreter on this crate's bindings), started before passt ([`Pending`]) with a unix
//! socket as descriptor 3 and the box's [`SupervisorSpec`] as its last argument; it calls
//! [`run_inherited`], which receives the listener over the socket (`SCM_RIGHTS`). It runs in
//! its own session (no terminal signal reaches it) and ends when passt does (the listener
//! hangs up), so it lives exactly as long as the box's network. Without a registered command, or
//! when it cannot start, the engine supervises on a thread as before.

use std::ffi::OsString;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::{Policy, Supervisor};

/// The command that runs a detached supervisor (program and leading arguments).
static COMMAND: OnceLock<Vec<OsString>> = OnceLock::new();

/// Registers the command line of a detached supervisor; the first registration wins.
/// Returns whether this one did.
pub fn set_supervisor_command(argv: Vec<OsString>) -> bool {
    !argv.is_empty() && COMMAND.set(argv).is_ok()
}

/// Whether a detached supervisor can be started (a command is registered).
pub fn available() -> bool {
    COMMAND.get().is_some()
}

/// What a detached supervisor needs to rebuild the box's [`Policy`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorSpec {
    /// The box's id (for the log).
    pub id: String,
    /// The box's validated `allow_net` entries (empty: no allow-list).
    pub allow_net: Vec<String>,
    /// The box's DNS servers.
    pub name_servers: Vec<IpAddr>,
}

impl SupervisorSpec {
    pub fn policy(&self) -> Result<Policy, String> {
        Policy::new(&self.allow_net, self.name_servers.clone())
    }
}

/// A detached supervisor started ahead of passt, waiting for passt's listener.
///
/// It is started first so that passt, in its pre-exec, can name it as its ptracer
/// ([`Pending::pid`] with `PR_SET_PTRACER`): under Yama's `ptrace_scope=1` (Ubuntu's default)
/// only an ancestor may read a process's memory, and the detached supervisor is not passt's.
pub struct Pending {
    pid: u32,
    socket: OwnedFd,
}

impl Pending {
    /// Starts the registered supervisor command for `spec`, its output appended to `log`; it
    /// gets one end of a socket pair as descriptor 3 and waits there for the listener.
    pub fn start(spec: &SupervisorSpec, log: &Path) -> std::io::Result<Pending> {
        let argv = COMMAND.get().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no detached supervisor command is registered",
            )
        })?;
        let json = serde_json::to_string(spec).map_err(std::io::Error::other)?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let (ours, theirs) = UnixStream::pair()?;
        let (ours, theirs) = (OwnedFd::from(ours), OwnedFd::from(theirs));
        let fd = theirs.as_raw_fd();
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .arg(json)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Its own session: Ctrl-C in the starting terminal must not end the box's network.
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                crate::network::place_fds(&[fd])
            });
        }
        let mut child = command.spawn()?;
        drop(theirs);
        let pid = child.id();
        // Reaped here while this process lives; by init (or a subreaper) after.
        let _ = std::thread::Builder::new()
            .name("egress-reaper".into())
            .spawn(move || child.wait());
        tracing::debug!(id = %spec.id, pid, "egress supervisor started in a process of its own");
        Ok(Pending { pid, socket: ours })
    }

    /// The supervisor's process id (for passt's `PR_SET_PTRACER`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends it the listener. On failure the listener comes back with the error, for the
    /// caller to supervise it itself; the supervisor then ends (its socket closes).
    pub fn hand_over(self, listener: OwnedFd) -> Result<(), (OwnedFd, std::io::Error)> {
        match send_fd(&self.socket, listener.as_raw_fd()) {
            Ok(()) => Ok(()),
            Err(e) => Err((listener, e)),
        }
    }
}

/// Room for the one control message that carries one descriptor.
fn control_space() -> usize {
    // SAFETY: CMSG_SPACE is a pure computation.
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize }
}

/// A message of the one byte `iov` points at, with `control` (of [`control_space`] bytes)
/// for its descriptor.
fn one_fd_message(iov: &mut libc::iovec, control: &mut [u8]) -> libc::msghdr {
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    msg
}

/// Sends descriptor `fd` over the unix socket `socket` (one byte of data, `SCM_RIGHTS`).
fn send_fd(socket: &OwnedFd, fd: RawFd) -> std::io::Result<()> {
    let mut byte = [1u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = vec![0u8; control_space()];
    let msg = one_fd_message(&mut iov, &mut control);
    // SAFETY: the message points at our own buffers, filled with the CMSG macros.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        if libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one descriptor sent with [`send_fd`] on `socket`.
fn receive_fd(socket: RawFd) -> std::io::Result<OwnedFd> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = vec![0u8; control_space()];
    let mut msg = one_fd_message(&mut iov, &mut control);
    // SAFETY: the message points at our own buffers; the control message is checked (level,
    // type, length) before its descriptor is taken.
    unsafe {
        let n = loop {
            let n = libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break n;
            }
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if n == 0
            || cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            || ((*cmsg).cmsg_len as usize)
                < libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the engine sent no listener (it could not start passt, or supervises it itself)",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// The detached supervisor's body: receives passt's listener on the socket at descriptor
/// `socket` and supervises it for the box `spec_json` describes, until passt exits.
pub fn run_inherited(socket: RawFd, spec_json: &str) -> Result<(), String> {
    let spec: SupervisorSpec =
        serde_json::from_str(spec_json).map_err(|e| format!("bad supervisor spec: {e}"))?;
    let policy = spec.policy()?;
    // SAFETY: fcntl on a descriptor number only checks that it is open.
    if unsafe { libc::fcntl(socket, libc::F_GETFD) } < 0 {
        return Err(format!(
            "descriptor {socket} is not open: nothing to supervise"
        ));
    }
    let listener = receive_fd(socket).map_err(|e| format!("receive passt's listener: {e}"))?;
    // SAFETY: the socket was handed to this process to own (see `Pending::start`).
    drop(unsafe { OwnedFd::from_raw_fd(socket) });
    Supervisor::new(listener, policy, spec.id).run();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_crosses_the_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b) = (OwnedFd::from(a), OwnedFd::from(b));
        let file = std::fs::File::open("/proc/self/status").unwrap();
        send_fd(&a, file.as_raw_fd()).unwrap();
        let got = receive_fd(b.as_raw_fd()).unwrap();
        assert_ne!(got.as_raw_fd(), file.as_raw_fd());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(got), &mut text).unwrap();
        assert!(text.contains("Pid:"), "{text}");
    }

    #[test]
    fn a_closed_socket_without_a_descriptor_is_an_error_not_a_hang() {
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b) = (OwnedFd::from(a), OwnedFd::from(b));
        drop(a);
        let e = receive_fd(b.as_raw_fd()).unwrap_err();
        assert!(e.to_string().contains("sent no listener"), "{e}");
    }

    #[test]
    fn bytes_without_a_descriptor_are_refused() {
        // Data but no SCM_RIGHTS message (or another control message): never a descriptor
        // number read from a buffer that holds none.
        let (a, b) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut &a, b"\x01\x02\x03").unwrap();
        let b = OwnedFd::from(b);
        let e = receive_fd(b.as_raw_fd()).unwrap_err();
        assert!(e.to_string().contains("sent no listener"), "{e}");
    }

    #[test]
    fn the_spec_rebuilds_the_policy_and_bad_specs_are_refused() {
        let spec = SupervisorSpec {
            id: "b".into(),
            allow_net: vec!["10.0.0.0/8".into()],
            name_servers: vec!["10.0.0.2".parse().unwrap()],
        };
        let json = serde_json::to_string(&spec).unwrap();
        let back: SupervisorSpec = serde_json::from_str(&json).unwrap();
        assert!(back.policy().unwrap().has_allow_list());
        assert!(run_inherited(3, "{")
            .unwrap_err()
            .contains("bad supervisor spec"));
        let bad = r#"{"id":"b","allow_net":["not a network/99"],"name_servers":[]}"#;
        assert!(run_inherited(3, bad).is_err());
    }
}
