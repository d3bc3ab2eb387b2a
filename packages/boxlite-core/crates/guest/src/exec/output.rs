//! The output pump of an execution: forwards stdout and stderr to the host, never more than
//! [`OUTPUT_WINDOW`] bytes ahead of the host's acknowledgements, until the process exited
//! (plus a short grace for trailing output); then reports the exit.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxlite_protocol::{ExitStatus, GuestMessage, OutputStream, OUTPUT_CHUNK_LEN, OUTPUT_WINDOW};

use super::cgroup::{cgroup_is_empty, prepare_spare_cgroup, release_cgroup, KILL_SETTLE};
use super::reaper::decode_wait_status;
use super::table::Entry;
use super::Executions;

/// How long output is still collected after the process exited, for descendants that keep the
/// pipes open. The execution ends on the process's exit, not on EOF.
const OUTPUT_GRACE: Duration = Duration::from_millis(50);

/// How long after the exit output held back by a slow host is still forwarded.
const MAX_DRAIN_AFTER_EXIT: Duration = Duration::from_secs(30);

/// Output flow control of one execution: the pump sends at most [`OUTPUT_WINDOW`] bytes
/// ahead of the host's acknowledgements, which arrive on the channel's reader thread.
pub(super) struct Credit {
    acked: AtomicU64,
    /// An eventfd the pump polls, signalled on every acknowledgement.
    wake: OwnedFd,
}

impl Credit {
    pub(super) fn new() -> io::Result<Credit> {
        // SAFETY: eventfd returns a fresh descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Credit {
            acked: AtomicU64::new(0),
            // SAFETY: fd is fresh and ours.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(super) fn ack(&self, bytes: u64) {
        self.acked.fetch_add(bytes, Ordering::SeqCst);
        let one = 1u64;
        // SAFETY: an 8-byte write to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear_wake(&self) {
        let mut value = 0u64;
        // SAFETY: an 8-byte read from our non-blocking eventfd.
        unsafe { libc::read(self.wake.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

impl Executions {
    /// Forwards output until the process exited (plus a short grace for trailing output),
    /// never more than [`OUTPUT_WINDOW`] bytes ahead of the host's acknowledgements.
    pub(super) fn pump_output(
        &self,
        exec_id: u32,
        outputs: Vec<(OwnedFd, OutputStream)>,
        notify: OwnedFd,
        credit: Arc<Credit>,
    ) {
        let mut streams: Vec<(Option<OwnedFd>, OutputStream)> =
            outputs.into_iter().map(|(fd, s)| (Some(fd), s)).collect();
        for (fd, _) in &streams {
            set_nonblocking(fd.as_ref().expect("open").as_raw_fd());
        }
        let mut status: Option<ExitStatus> = None;
        let mut exited_at: Option<Instant> = None;
        let mut grace_deadline: Option<Instant> = None;
        let mut sent: u64 = 0;
        let mut buf = vec![0u8; OUTPUT_CHUNK_LEN];
        loop {
            let open: Vec<usize> = (0..streams.len())
                .filter(|&i| streams[i].0.is_some())
                .collect();
            if status.is_some()
                && (open.is_empty() || grace_deadline.is_some_and(|d| Instant::now() >= d))
            {
                break;
            }
            let blocked = sent.saturating_sub(credit.acked.load(Ordering::SeqCst)) >= OUTPUT_WINDOW;
            let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(4);
            if !blocked {
                pfds.extend(open.iter().map(|&i| libc::pollfd {
                    fd: streams[i].0.as_ref().expect("open").as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }));
            }
            let credit_slot = pfds.len();
            pfds.push(libc::pollfd {
                fd: credit.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            let notify_slot = pfds.len();
            if status.is_none() {
                pfds.push(libc::pollfd {
                    fd: notify.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            // While the host holds us back, the grace period does not run: output the process
            // wrote before it exited is never dropped for a slow reader (for at most
            // MAX_DRAIN_AFTER_EXIT, so a daemon writing forever cannot keep the execution open).
            let timeout = match grace_deadline {
                Some(_) if blocked => 100,
                Some(d) => d.saturating_duration_since(Instant::now()).as_millis() as i32,
                None => -1,
            };
            // SAFETY: pfds is a live array of pollfd.
            let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
            if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
            if pfds[credit_slot].revents != 0 {
                credit.clear_wake();
                if let (Some(exit), Some(_)) = (exited_at, grace_deadline) {
                    if exit.elapsed() < MAX_DRAIN_AFTER_EXIT {
                        grace_deadline = Some(Instant::now() + OUTPUT_GRACE);
                    }
                }
            }
            if !blocked {
                for (slot, &i) in open.iter().enumerate() {
                    if pfds[slot].revents == 0 {
                        continue;
                    }
                    let budget = OUTPUT_WINDOW
                        .saturating_sub(sent.saturating_sub(credit.acked.load(Ordering::SeqCst)));
                    let (n, open) = self.drain(exec_id, &mut streams[i], &mut buf, budget);
                    sent += n;
                    if !open {
                        streams[i].0 = None;
                    }
                }
            }
            if status.is_none()
                && pfds
                    .get(notify_slot)
                    .is_some_and(|p| p.fd == notify.as_raw_fd() && p.revents != 0)
            {
                let mut raw = [0u8; 4];
                // SAFETY: reading 4 bytes into a live buffer; the reaper writes them atomically.
                if unsafe { libc::read(notify.as_raw_fd(), raw.as_mut_ptr().cast(), 4) } == 4 {
                    status = Some(decode_wait_status(i32::from_ne_bytes(raw)));
                    exited_at = Some(Instant::now());
                    grace_deadline = Some(Instant::now() + OUTPUT_GRACE);
                }
            }
        }
        let mut table = self.table.lock().expect("table lock");
        let entry = table.by_id.remove(&exec_id);
        if let Some(entry) = &entry {
            table.by_pid.remove(&entry.pid);
        }
        drop(table);
        if let Some(Entry {
            cgroup: Some(dir),
            killed,
            ..
        }) = &entry
        {
            // A killed execution is over only when nothing it started is left.
            let deadline = Instant::now() + KILL_SETTLE;
            while *killed && !cgroup_is_empty(dir) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        self.send(GuestMessage::Exited {
            exec_id,
            status: status.unwrap_or(ExitStatus::Signal(libc::SIGKILL)),
        });
        // After the report, off the round trip: the group is kept for a later execution or
        // removed.
        if let Some(Entry {
            cgroup: Some(dir), ..
        }) = entry
        {
            release_cgroup(dir);
        }
        // The next execution's cgroup, made now (if none was kept) rather than on its round trip.
        prepare_spare_cgroup();
    }

    /// Reads what is available on one stream, up to `budget` bytes (the rest stays in the
    /// pipe); returns the bytes sent and false once the stream reached EOF.
    fn drain(
        &self,
        exec_id: u32,
        stream: &mut (Option<OwnedFd>, OutputStream),
        buf: &mut [u8],
        budget: u64,
    ) -> (u64, bool) {
        let fd = stream.0.as_ref().expect("open").as_raw_fd();
        let mut sent = 0u64;
        while sent < budget {
            let want = buf.len().min((budget - sent) as usize);
            // SAFETY: reading into a live buffer of at least `want` bytes.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), want) };
            if n > 0 {
                self.send(GuestMessage::Output {
                    exec_id,
                    stream: stream.1,
                    data: buf[..n as usize].to_vec(),
                });
                sent += n as u64;
                continue;
            }
            if n == 0 {
                return (sent, false);
            }
            let err = io::Error::last_os_error();
            // A terminal's master reads EIO once the last slave descriptor closed: its EOF.
            return (
                sent,
                matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ),
            );
        }
        (sent, true)
    }
}
