//! The standard streams of a new execution: pipes, or a pseudo-terminal on the box's devpts
//! instance, and the descriptor helpers they need.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use boxlite_protocol::OutputStream;

use crate::ROOTFS;

pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub(super) fn set_window_size(master: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a live struct.
    if unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a fresh descriptor or -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The standard streams of a new execution: pipes, or a pseudo-terminal.
pub(super) struct ExecStdio {
    /// The child's ends: stdin, stdout, stderr (all the terminal's slave side for a TTY).
    pub(super) child: Vec<OwnedFd>,
    /// Where the host's input goes, when stdin is open.
    pub(super) stdin_host: Option<OwnedFd>,
    /// What the pump reads.
    pub(super) outputs: Vec<(OwnedFd, OutputStream)>,
    pub(super) tty_master: Option<OwnedFd>,
}

impl ExecStdio {
    pub(super) fn open(stdin: bool, tty: Option<(u16, u16)>) -> io::Result<ExecStdio> {
        if let Some((rows, cols)) = tty {
            let ptmx = CString::new(format!("{ROOTFS}/dev/pts/ptmx")).expect("no NUL");
            // SAFETY: open(2) of the box's devpts instance.
            let master = unsafe {
                libc::open(
                    ptmx.as_ptr(),
                    libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
                )
            };
            if master < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fresh and ours.
            let master = unsafe { OwnedFd::from_raw_fd(master) };
            let mut number: libc::c_uint = 0;
            let unlock: libc::c_int = 0;
            // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes one.
            unsafe {
                if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0
                    || libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            set_window_size(master.as_raw_fd(), rows, cols)?;
            let slave_path = CString::new(format!("{ROOTFS}/dev/pts/{number}")).expect("no NUL");
            // SAFETY: open(2) of the slave side.
            let slave = unsafe {
                libc::open(
                    slave_path.as_ptr(),
                    libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
                )
            };
            if slave < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fresh and ours.
            let slave = unsafe { OwnedFd::from_raw_fd(slave) };
            return Ok(ExecStdio {
                child: vec![dup(slave.as_raw_fd())?, dup(slave.as_raw_fd())?, slave],
                stdin_host: Some(dup(master.as_raw_fd())?),
                outputs: vec![(dup(master.as_raw_fd())?, OutputStream::Stdout)],
                tty_master: Some(master),
            });
        }
        let (stdin_child, stdin_host) = if stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            (OwnedFd::from(std::fs::File::open("/dev/null")?), None)
        };
        let (stdout_host, stdout_child) = pipe()?;
        let (stderr_host, stderr_child) = pipe()?;
        Ok(ExecStdio {
            child: vec![stdin_child, stdout_child, stderr_child],
            stdin_host,
            outputs: vec![
                (stdout_host, OutputStream::Stdout),
                (stderr_host, OutputStream::Stderr),
            ],
            tty_master: None,
        })
    }

    pub(super) fn child_fds(&self) -> [RawFd; 3] {
        [
            self.child[0].as_raw_fd(),
            self.child[1].as_raw_fd(),
            self.child[2].as_raw_fd(),
        ]
    }
}
