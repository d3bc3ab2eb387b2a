//! Starting a process the way posix_spawn does: `clone(CLONE_VM | CLONE_VFORK)` on a small
//! stack of its own, so the agent's address space is never copied. Under emulation a `fork()`
//! of the multi-threaded agent costs milliseconds (page tables, then copy-on-write faults in
//! every thread); this costs a fraction of that.
//!
//! The child runs only async-signal-safe calls on memory prepared before the clone, and the
//! parent is suspended until the child has called `execve` or exited.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

const CHILD_STACK_LEN: usize = 64 * 1024;

thread_local! {
    /// The stack a spawned child runs on until it calls `execve` (see [`spawn`]).
    static CHILD_STACK: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; CHILD_STACK_LEN]);
}

/// What to start; every string is prepared before the clone.
pub struct SpawnRequest {
    /// Candidate paths of the program, in PATH order (one when the program names a path).
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub root: CString,
    pub cwd: CString,
    pub user: Option<(u32, u32)>,
    /// Supplementary groups of `user`.
    pub groups: Vec<libc::gid_t>,
    /// Descriptors for the child's stdin, stdout and stderr.
    pub stdio: [RawFd; 3],
    /// The `cgroup.procs` file of the execution's cgroup; the child moves itself in before
    /// exec, so everything it starts is in the group from the first instruction.
    pub cgroup_procs: Option<RawFd>,
    /// The stdio descriptors are a terminal's slave side: make it the controlling terminal.
    pub tty: bool,
    /// Resource limits to set (soft and hard) before exec.
    pub rlimits: Vec<(RlimitResource, u64)>,
}

/// The type glibc's `setrlimit` takes for a resource.
pub type RlimitResource = libc::__rlimit_resource_t;

struct ChildArgs {
    candidates: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    root: *const libc::c_char,
    cwd: *const libc::c_char,
    user: Option<(u32, u32)>,
    groups: Vec<libc::gid_t>,
    stdio: [RawFd; 3],
    cgroup_procs: Option<RawFd>,
    tty: bool,
    rlimits: Vec<(RlimitResource, u64)>,
    error_fd: RawFd,
}

fn c_array(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The paths `program` may live at: itself if it names a path, else each PATH entry.
pub fn candidates(program: &str, path_var: Option<&str>) -> Vec<CString> {
    let to_c = |p: &[u8]| CString::new(p).ok();
    if program.contains('/') {
        return to_c(program.as_bytes()).into_iter().collect();
    }
    path_var
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .filter_map(|dir| {
            let mut full = OsStr::new(dir).as_bytes().to_vec();
            full.push(b'/');
            full.extend_from_slice(program.as_bytes());
            to_c(&full)
        })
        .collect()
}

/// The steps shared by executed programs and builtins, in the child: join the cgroup, reset
/// signals, new session, stdio, controlling terminal, chroot, limits, user. Returns the failing
/// stage on error (errno is left set).
///
/// # Safety
/// Runs in a freshly cloned or forked child; only async-signal-safe calls.
unsafe fn prepare_child(args: &ChildArgs) -> Result<(), i32> {
    if let Some(fd) = args.cgroup_procs {
        // "0" moves the writing process itself.
        if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            return Err(6);
        }
    }
    // The agent ignores SIGPIPE (Rust does); an ignored disposition survives exec.
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    if libc::setsid() < 0 {
        return Err(1);
    }
    for (target, fd) in args.stdio.iter().enumerate() {
        if libc::dup2(*fd, target as RawFd) < 0 {
            return Err(2);
        }
    }
    if args.tty && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
        return Err(2);
    }
    if libc::chroot(args.root) != 0 || libc::chdir(args.cwd) != 0 {
        return Err(3);
    }
    for &(resource, value) in &args.rlimits {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        if libc::setrlimit(resource, &limit) != 0 {
            return Err(7);
        }
    }
    if let Some((uid, gid)) = args.user {
        if libc::setgroups(args.groups.len(), args.groups.as_ptr()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(4);
        }
    }
    Ok(())
}

fn report_failure(error_fd: RawFd, stage: i32) -> ! {
    // SAFETY: writing 8 bytes from a live buffer, then leaving the child.
    unsafe {
        let report = [stage, *libc::__errno_location()];
        libc::write(error_fd, report.as_ptr().cast(), 8);
        libc::_exit(127)
    }
}

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the ChildArgs the suspended parent keeps alive; only raw,
    // async-signal-safe system calls follow.
    unsafe {
        let args = &*(arg as *const ChildArgs);
        let fail = |stage: i32| -> libc::c_int { report_failure(args.error_fd, stage) };
        if let Err(stage) = prepare_child(args) {
            return fail(stage);
        }
        // As execvp does: the first candidate that exists wins; EACCES is remembered.
        let mut saw_eacces = false;
        for &path in args.candidates.iter().take_while(|p| !p.is_null()) {
            libc::execve(path, args.argv.as_ptr(), args.envp.as_ptr());
            match *libc::__errno_location() {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => saw_eacces = true,
                _ => return fail(5),
            }
        }
        *libc::__errno_location() = if saw_eacces {
            libc::EACCES
        } else {
            libc::ENOENT
        };
        fail(5)
    }
}

/// Where spawning failed.
#[derive(Debug)]
pub struct SpawnError {
    /// 1 setsid, 2 stdio/terminal, 3 chroot/chdir, 4 user, 5 exec, 6 cgroup, 7 rlimit,
    /// 0 clone/fork.
    pub stage: i32,
    pub error: io::Error,
}

fn error_pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two fresh descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SpawnError {
            stage: 0,
            error: io::Error::last_os_error(),
        });
    }
    // SAFETY: fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn child_args(request: &SpawnRequest, error_fd: RawFd) -> ChildArgs {
    ChildArgs {
        candidates: c_array(&request.candidates),
        argv: c_array(&request.argv),
        envp: c_array(&request.envp),
        root: request.root.as_ptr(),
        cwd: request.cwd.as_ptr(),
        user: request.user,
        groups: request.groups.clone(),
        stdio: request.stdio,
        cgroup_procs: request.cgroup_procs,
        tty: request.tty,
        rlimits: request.rlimits.clone(),
        error_fd,
    }
}

/// Waits for the child's verdict: EOF on the error pipe means it got going.
fn await_start(pid: i32, error_rx: OwnedFd) -> Result<i32, SpawnError> {
    let mut report = [0i32; 2];
    // SAFETY: reading 8 bytes into a live buffer; EOF (0) means the child got going.
    let n = unsafe { libc::read(error_rx.as_raw_fd(), report.as_mut_ptr().cast(), 8) };
    if n == 8 {
        // The failed child exits 127; the reaper collects it like any orphan.
        return Err(SpawnError {
            stage: report[0],
            error: io::Error::from_raw_os_error(report[1]),
        });
    }
    Ok(pid)
}

/// Starts the process; returns its pid once it has called `execve`.
pub fn spawn(request: &SpawnRequest) -> Result<i32, SpawnError> {
    let (error_rx, error_tx) = error_pipe()?;
    let args = child_args(request, error_tx.as_raw_fd());
    // The child's stack is this thread's, kept from one spawn to the next: allocating and
    // faulting in a new one each time is measurable under emulation. CLONE_VFORK suspends this
    // thread until the child has exec'd or exited, so no two children share it.
    let pid = CHILD_STACK.with(|stack| {
        let mut stack = stack.borrow_mut();
        // The stack grows down: hand clone its 16-byte aligned top.
        let top = ((stack.as_mut_ptr() as usize + CHILD_STACK_LEN) & !15) as *mut libc::c_void;
        // SAFETY: the child runs `child` on its own stack; CLONE_VFORK keeps this thread (and
        // so `args` and `stack`) suspended until the child has exec'd or exited.
        unsafe {
            libc::clone(
                child,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &args as *const ChildArgs as *mut libc::c_void,
            )
        }
    });
    if pid < 0 {
        return Err(SpawnError {
            stage: 0,
            error: io::Error::last_os_error(),
        });
    }
    drop(error_tx);
    await_start(pid, error_rx)
}

/// Runs `work` in a forked child set up like an executed program (cgroup, session, stdio,
/// chroot, limits, user); the child exits with `work`'s return value. Used for the agent's
/// builtins, which need the agent's code rather than a program of the image.
pub fn fork_run(request: &SpawnRequest, work: impl FnOnce() -> i32) -> Result<i32, SpawnError> {
    let (error_rx, error_tx) = error_pipe()?;
    let args = child_args(request, error_tx.as_raw_fd());
    // SAFETY: fork of the multi-threaded agent; the child only uses its own copy of memory
    // (glibc makes malloc usable after fork) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError {
            stage: 0,
            error: io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        // SAFETY: in the child.
        unsafe {
            if let Err(stage) = prepare_child(&args) {
                report_failure(args.error_fd, stage);
            }
            // Nothing of the agent's (the channel, other executions' pipes) stays open here.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            let code = work();
            libc::_exit(code)
        }
    }
    drop(error_tx);
    await_start(pid, error_rx)
}

#[cfg(test)]
mod tests {
    use super::candidates;

    #[test]
    fn program_lookup_follows_path() {
        let c: Vec<String> = candidates("python3", Some("/usr/local/bin:/usr/bin"))
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(c, ["/usr/local/bin/python3", "/usr/bin/python3"]);
        let c = candidates("./run.sh", Some("/bin"));
        assert_eq!(c[0].to_str().unwrap(), "./run.sh");
        assert_eq!(candidates("true", None).len(), 6);
    }
}
