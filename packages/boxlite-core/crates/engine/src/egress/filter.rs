//! The seccomp filter passt runs under, and the hand-over of its user-notification listener
//! from the forked child to the engine (before passt's exec).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

const LD: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const RET: u32 = libc::BPF_RET | libc::BPF_K;
/// Offset of the low half of system-call argument `i` in `struct seccomp_data` (little endian).
const fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

/// The filter: `connect`, `sendmsg`, `sendmmsg` and `sendto` with an address go to the
/// supervisor; threads, `clone3` and io_uring are refused; with `keep_dumpable`,
/// `prctl(PR_SET_DUMPABLE, 0)` succeeds without effect, so that an unprivileged engine can
/// still read passt's memory (passt makes itself non-dumpable, and only a process holding
/// CAP_SYS_PTRACE may read a non-dumpable process).
pub fn filter(keep_dumpable: bool) -> Vec<libc::sock_filter> {
    let notify = stmt(RET, libc::SECCOMP_RET_USER_NOTIF);
    let allow = stmt(RET, libc::SECCOMP_RET_ALLOW);
    let errno = |e: i32| stmt(RET, libc::SECCOMP_RET_ERRNO | e as u32);
    let kill = stmt(RET, libc::SECCOMP_RET_KILL_PROCESS);
    let mut prog = vec![stmt(LD, 4), jump(JEQ, AUDIT_ARCH, 1, 0), kill, stmt(LD, 0)];
    #[cfg(target_arch = "x86_64")]
    {
        // x32 system calls share the architecture value and would bypass the checks below.
        prog.push(jump(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            0x4000_0000,
            0,
            1,
        ));
        prog.push(kill);
    }
    // `if nr == X { block }`: a jump over the block, then the block (which ends in a return).
    let mut case = |nr: libc::c_long, block: &[libc::sock_filter]| {
        prog.push(jump(JEQ, nr as u32, 0, block.len() as u8));
        prog.extend_from_slice(block);
    };
    case(libc::SYS_connect, &[notify]);
    case(libc::SYS_sendmsg, &[notify]);
    case(libc::SYS_sendmmsg, &[notify]);
    case(
        libc::SYS_sendto,
        &[
            stmt(LD, arg_lo(4)),
            jump(JEQ, 0, 0, 3),
            stmt(LD, arg_lo(4) + 4),
            jump(JEQ, 0, 0, 1),
            allow,
            notify,
        ],
    );
    case(libc::SYS_io_uring_setup, &[errno(libc::ENOSYS)]);
    case(libc::SYS_clone3, &[errno(libc::ENOSYS)]);
    case(
        libc::SYS_clone,
        &[
            stmt(LD, arg_lo(0)),
            jump(
                libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
                libc::CLONE_VM as u32,
                0,
                1,
            ),
            errno(libc::EPERM),
            allow,
        ],
    );
    #[cfg(target_arch = "x86_64")]
    case(libc::SYS_vfork, &[errno(libc::EPERM)]);
    if keep_dumpable {
        case(
            libc::SYS_prctl,
            &[
                stmt(LD, arg_lo(0)),
                jump(JEQ, libc::PR_SET_DUMPABLE as u32, 0, 3),
                stmt(LD, arg_lo(1)),
                jump(JEQ, 0, 0, 1),
                errno(0),
                allow,
            ],
        );
    }
    prog.push(allow);
    prog
}

/// The child's ends of the two pipes of the listener hand-over, and the parent's ends, which
/// the child inherited and closes first.
#[derive(Debug, Clone, Copy)]
pub struct HandOver {
    /// Child to parent: `[pid, listener]`.
    pub report: RawFd,
    /// Parent to child: one byte once the parent holds the listener.
    pub ack: RawFd,
    /// The parent's ends (report's read end, ack's write end).
    pub parent_ends: [RawFd; 2],
}

/// In the child before exec (async-signal-safe system calls only): installs `prog` with a new
/// listener, writes `[pid, listener]` to `report`, and waits for one byte on `ack` (the parent
/// has taken the listener with `pidfd_getfd`).
///
/// The child first closes its copies of the parent's pipe ends: if the parent cannot take the
/// listener, its own close of the ack pipe then ends the child's wait (an error, not a hang).
/// It also makes itself dumpable, as its exec would: an engine that changed its user ids
/// in-process is not dumpable, and neither would its forked child be, so `pidfd_getfd` (which
/// needs ptrace access) would fail.
///
/// # Safety
/// Call only in a freshly forked child.
pub unsafe fn install_in_child(prog: &[libc::sock_filter], pipes: HandOver) -> std::io::Result<()> {
    let HandOver {
        report,
        ack,
        parent_ends,
    } = pipes;
    let last = std::io::Error::last_os_error;
    for fd in parent_ends {
        libc::close(fd);
    }
    if libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 {
        return Err(last());
    }
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        return Err(last());
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    let listener = libc::syscall(
        libc::SYS_seccomp,
        libc::SECCOMP_SET_MODE_FILTER,
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
        &fprog as *const libc::sock_fprog,
    );
    if listener < 0 {
        return Err(last());
    }
    let message = [libc::getpid(), listener as i32];
    if libc::write(report, message.as_ptr().cast(), 8) != 8 {
        return Err(last());
    }
    let mut byte = 0u8;
    if libc::read(ack, (&mut byte as *mut u8).cast(), 1) != 1 {
        return Err(std::io::Error::other(
            "the engine did not take passt's seccomp listener",
        ));
    }
    libc::close(listener as i32);
    Ok(())
}

/// In the parent: reads `[pid, fd]` from `report` and copies that descriptor out of the child.
pub fn take_listener(report: OwnedFd) -> std::io::Result<OwnedFd> {
    let mut message = [0i32; 2];
    let mut got = 0usize;
    while got < 8 {
        // SAFETY: reading into our own buffer from a descriptor we own.
        let n = unsafe {
            libc::read(
                report.as_raw_fd(),
                (message.as_mut_ptr() as *mut u8).add(got).cast(),
                8 - got,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(std::io::Error::other(
                "passt's launcher exited before installing its seccomp filter",
            ));
        }
        got += n as usize;
    }
    // SAFETY: pidfd_open/pidfd_getfd return fresh descriptors that we then own.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, message[0], 0);
        if pidfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as RawFd);
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), message[1], 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd as RawFd))
    }
}
