//! Early boot and shutdown of the guest: mounts, loopback, hostname, power-off.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use crate::cmdline::{cmdline_value, kernel_cmdline};
// The agent's log lives in `crate::log`; re-exported so `system::log` keeps working.
pub use crate::log::log;
use crate::ROOTFS;

/// The cgroup every execution's own group lives under; it holds the memory limit of
/// everything the box runs, so the OOM killer picks among executions, never the agent.
pub const EXECS_CGROUP: &str = "/rootfs/sys/fs/cgroup/boxlite-execs";

/// Memory kept back from executions for the kernel and the agent.
fn memory_reserve(mem_total: u64) -> u64 {
    (mem_total / 8).min(32 << 20)
}

/// Allocations succeed and the OOM killer ends the process that overcommitted (exit 137), as
/// on a normal Linux host where swap usually hides the heuristic; and the executions'
/// parent cgroup gets the memory and pids controllers.
///
/// Each execution's own cgroup gets the pids controller only (its process limit, `pids.max`).
/// Its memory is charged to the parent, which holds the box's limit: nothing reads or limits an
/// execution's memory on its own, and a memory controller per execution (made with the cgroup,
/// taken offline and reparented after it) cost every exec round trip of `true` about 0.7 ms of
/// ~14 ms under emulation. Code in the box that needs the memory controller in cgroups of its
/// own can enable it (`+memory` in the parent's `cgroup.subtree_control`).
fn setup_limits() -> io::Result<()> {
    let _ = fs::write("/proc/sys/vm/overcommit_memory", "1");
    let root = "/rootfs/sys/fs/cgroup";
    fs::write(format!("{root}/cgroup.subtree_control"), "+memory +pids")?;
    fs::create_dir_all(EXECS_CGROUP)?;
    fs::write(format!("{EXECS_CGROUP}/cgroup.subtree_control"), "+pids")?;
    let meminfo = fs::read_to_string("/proc/meminfo")?;
    let total = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or(0);
    if total > 0 {
        fs::write(
            format!("{EXECS_CGROUP}/memory.max"),
            (total - memory_reserve(total)).to_string(),
        )?;
    }
    Ok(())
}

/// What boot found out, for the hello message and the executions.
pub struct Boot {
    pub kernel_release: String,
    /// False when the VM was started without a root disk (the accelerator probe does that).
    pub has_rootfs: bool,
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in mount arguments")
}

pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).create(target)?;
    let data = data.map(cstr);
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            cstr(source).as_ptr(),
            cstr(target).as_ptr(),
            cstr(fstype).as_ptr(),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("mount {fstype} on {target}: {err}"),
        ));
    }
    Ok(())
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::from("unknown");
    }
    // SAFETY: uname NUL-terminates release.
    unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Sets the wall clock (from the host's hello).
pub fn set_clock(unix_time_ns: u64) {
    if unix_time_ns == 0 {
        return;
    }
    let ts = libc::timespec {
        tv_sec: (unix_time_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_time_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime with a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        log(&format!("clock not set: {}", io::Error::last_os_error()));
    }
}

/// `RNDADDENTROPY` (`_IOW('R', 0x03, int[2])`) and `RNDRESEEDCRNG` (`_IO('R', 0x07)`) of
/// `<linux/random.h>`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Mixes `bytes` (fresh randomness from the host) into the kernel's entropy pool, credited as
/// full entropy, and reseeds the kernel's random number generator from the pool at once, so
/// that `getrandom`, `/dev/urandom` and everything seeded from them from now on differ from
/// any other copy of this guest. Failures are logged: the kernel's own reseeding remains.
pub fn add_entropy(bytes: &[u8]) {
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let words = bytes.len().div_ceil(4);
    let mut info = vec![0u32; 2 + words];
    info[0] = (bytes.len() * 8) as u32;
    info[1] = bytes.len() as u32;
    // SAFETY: `info` has room for `bytes.len()` bytes after its two header words.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            info[2..].as_mut_ptr().cast::<u8>(),
            bytes.len(),
        );
    }
    let random = match fs::OpenOptions::new().write(true).open("/dev/random") {
        Ok(f) => f,
        Err(e) => {
            log(&format!("entropy not added: cannot open /dev/random: {e}"));
            return;
        }
    };
    let fd = random.as_raw_fd();
    // SAFETY: both ioctls on an open /dev/random; RNDADDENTROPY reads the rand_pool_info above.
    if unsafe { libc::ioctl(fd, RNDADDENTROPY as _, info.as_ptr()) } != 0 {
        log(&format!(
            "entropy not added: {}",
            io::Error::last_os_error()
        ));
        return;
    }
    if unsafe { libc::ioctl(fd, RNDRESEEDCRNG as _) } != 0 {
        log(&format!(
            "random generator not reseeded: {}",
            io::Error::last_os_error()
        ));
    }
}

/// Guest uptime in milliseconds.
pub fn uptime_ms() -> u64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |secs| (secs * 1000.0) as u64)
}

fn redirect_stdio_to_console() {
    if let Ok(console) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(console.as_raw_fd(), fd) };
        }
    }
}

pub fn set_hostname(name: &str) {
    // SAFETY: pointer and length describe a live buffer.
    unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
}

/// The boot id programs in the box read, and the agent's own file mounted over it once the
/// box was restored from a snapshot (outside the box's root, so nothing in the box writes it).
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
const BOOT_ID_FILE: &str = "/boot_id";
const RANDOM_UUID: &str = "/proc/sys/kernel/random/uuid";

/// Gives the box a boot id of its own: a fresh random UUID written to [`BOOT_ID_FILE`], bound
/// read-only over the box's [`BOOT_ID`] (the first time; a snapshot of a restored box keeps
/// the mount, and the file is rewritten in place).
pub fn new_boot_id() {
    // The kernel makes a fresh random (version 4) UUID on every read of this file, from its
    // pool that the hello reseeded.
    let uuid = match fs::read_to_string(RANDOM_UUID) {
        Ok(uuid) => uuid,
        Err(e) => {
            log(&format!("boot id not changed: {e}"));
            return;
        }
    };
    if let Err(e) = fs::write(BOOT_ID_FILE, uuid) {
        log(&format!("boot id not changed: {e}"));
        return;
    }
    // Kept in the agent's memory, which a snapshot saves together with the kernel's mount
    // table: a restore of a restored box finds both set.
    static BOUND: AtomicBool = AtomicBool::new(false);
    if BOUND.load(Ordering::Relaxed) {
        return;
    }
    let target = format!("{ROOTFS}{BOOT_ID}");
    let (source, target) = (cstr(BOOT_ID_FILE), cstr(&target));
    // SAFETY: valid NUL-terminated paths; a bind mount takes no file system type or data.
    let mount = |source: *const libc::c_char, flags| unsafe {
        libc::mount(
            source,
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        ) == 0
    };
    if !mount(source.as_ptr(), libc::MS_BIND) {
        log(&format!(
            "boot id not mounted: {}",
            io::Error::last_os_error()
        ));
        return;
    }
    BOUND.store(true, Ordering::Relaxed);
    if !mount(
        std::ptr::null(),
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
    ) {
        log(&format!(
            "boot id not made read-only: {}",
            io::Error::last_os_error()
        ));
    }
}

/// The virtio device id of a memory balloon (virtio spec 5.5).
const VIRTIO_ID_BALLOON: &str = "0x0005";
const BALLOON_DRIVER: &str = "/sys/bus/virtio/drivers/virtio_balloon";

/// Turns free page reporting on or off by binding or unbinding the balloon's driver: bound
/// (as at boot), it hands the host every free 2 MiB block of guest memory, which the host then
/// drops from the VM's resident memory. One worker thread does it, in the order asked; this
/// returns once it is off, but does not wait for it to be on (binding probes the device, tens
/// of ms under TCG, which would hold up the agent's next request).
pub fn set_free_page_reporting(enabled: bool) {
    // The worker and what it last did live in the agent's memory, which a snapshot saves
    // together with the driver's state: a restore that finds it as wanted costs nothing.
    // A request carries where to say it is done when the caller waits (turning it off).
    type Request = (bool, Option<mpsc::Sender<()>>);
    static WORKER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (requests, received) = mpsc::channel::<Request>();
        std::thread::spawn(move || {
            let mut reporting = true;
            for (enabled, done) in received {
                if reporting != enabled && switch_free_page_reporting(enabled) {
                    reporting = enabled;
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        });
        requests
    });
    if enabled {
        let _ = worker.send((true, None));
    } else {
        let (done, finished) = mpsc::channel();
        if worker.send((false, Some(done))).is_ok() {
            let _ = finished.recv();
        }
    }
}

/// Binds (`enabled`) or unbinds the balloon's driver; whether it now is as asked.
fn switch_free_page_reporting(enabled: bool) -> bool {
    let Some(device) = balloon_device() else {
        log("no balloon device: free page reporting unchanged");
        return false;
    };
    if Path::new(BALLOON_DRIVER).join(&device).exists() == enabled {
        return true;
    }
    let action = if enabled { "bind" } else { "unbind" };
    match fs::write(Path::new(BALLOON_DRIVER).join(action), &device) {
        Ok(()) => true,
        Err(e) => {
            log(&format!("balloon {action} of {device} failed: {e}"));
            false
        }
    }
}

/// The name (`virtioN`) of the VM's balloon device, if it has one.
fn balloon_device() -> Option<String> {
    fs::read_dir("/sys/bus/virtio/devices")
        .ok()?
        .flatten()
        .find(|entry| {
            fs::read_to_string(entry.path().join("device"))
                .is_ok_and(|id| id.trim() == VIRTIO_ID_BALLOON)
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
}

/// Brings the loopback interface up (programs expect 127.0.0.1 to work even without a network).
fn loopback_up() -> io::Result<()> {
    #[repr(C)]
    struct IfReqFlags {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    // SAFETY: plain socket and ioctl calls on a zeroed, correctly sized ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: IfReqFlags = std::mem::zeroed();
        req.name[..2].copy_from_slice(b"lo");
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(err);
        }
    }
    Ok(())
}

fn wait_for_path(path: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if Path::new(path).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Path::new(path).exists()
}

/// Mounts the kernel file systems and the box's root file system.
pub fn boot() -> io::Result<Boot> {
    mount(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        libc::MS_NOSUID,
        Some("mode=0755"),
    )?;
    redirect_stdio_to_console();
    mount(
        "proc",
        "/proc",
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;
    mount(
        "sysfs",
        "/sys",
        "sysfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;

    let cmdline = kernel_cmdline();
    if let Some(name) = cmdline_value(&cmdline, "boxlite.hostname") {
        set_hostname(&name);
    }
    if let Err(e) = loopback_up() {
        log(&format!("loopback interface not up: {e}"));
    }

    let has_rootfs = match cmdline_value(&cmdline, "boxlite.root") {
        Some(device) => {
            mount_rootfs(&device)?;
            true
        }
        None => false,
    };
    if has_rootfs {
        mount_volumes(&cmdline);
    }
    crate::network::setup(&cmdline);
    Ok(Boot {
        kernel_release: kernel_release(),
        has_rootfs,
    })
}

fn mount_rootfs(device: &str) -> io::Result<()> {
    if !wait_for_path(device, Duration::from_secs(10)) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("root disk {device} never appeared"),
        ));
    }
    mount(device, ROOTFS, "ext4", libc::MS_NOATIME, None)?;
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(
        "proc",
        &format!("{ROOTFS}/proc"),
        "proc",
        nosuid_nodev_noexec,
        None,
    )?;
    mount(
        "sysfs",
        &format!("{ROOTFS}/sys"),
        "sysfs",
        nosuid_nodev_noexec,
        None,
    )?;
    mount(
        "devtmpfs",
        &format!("{ROOTFS}/dev"),
        "devtmpfs",
        libc::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mount(
        "devpts",
        &format!("{ROOTFS}/dev/pts"),
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    mount(
        "tmpfs",
        &format!("{ROOTFS}/dev/shm"),
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
    // cgroup v2: every execution gets its own group, so that killing it kills all it started.
    // favordynmods: moving each new execution into its group must not wait for an RCU grace
    // period (slow under emulation); forks get slightly dearer instead.
    mount(
        "cgroup2",
        &format!("{ROOTFS}/sys/fs/cgroup"),
        "cgroup2",
        nosuid_nodev_noexec,
        Some("favordynmods"),
    )?;
    // /dev/ptmx must lead to this devpts instance.
    let ptmx = format!("{ROOTFS}/dev/ptmx");
    let _ = fs::remove_file(&ptmx);
    let _ = std::os::unix::fs::symlink("pts/ptmx", &ptmx);
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, format!("{ROOTFS}/dev/{link}"));
    }
    if let Err(e) = setup_limits() {
        log(&format!("execution limits not set up: {e}"));
    }
    let tmp = format!("{ROOTFS}/tmp");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o1777)
        .create(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

fn unhex(text: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The host's shared directories (`boxlite.volumes=TAG:MODE:HEXPATH,...`): 9p over virtio,
/// read-only ones mounted read-only (QEMU refuses writes to them as well).
fn mount_volumes(cmdline: &str) {
    let Some(list) = cmdline_value(cmdline, "boxlite.volumes") else {
        return;
    };
    for spec in list.split(',') {
        let mut parts = spec.splitn(3, ':');
        let (Some(tag), Some(mode), Some(path)) =
            (parts.next(), parts.next(), parts.next().and_then(unhex))
        else {
            log(&format!("bad volume spec {spec:?}"));
            continue;
        };
        let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
        if mode == "ro" {
            flags |= libc::MS_RDONLY;
        }
        let target = format!("{ROOTFS}{path}");
        if let Err(e) = mount(
            tag,
            &target,
            "9p",
            flags,
            Some("trans=virtio,version=9p2000.L,msize=262144,cache=none,access=client"),
        ) {
            log(&format!("volume {tag} not mounted at {path}: {e}"));
        }
    }
}

/// Ends the VM at once (QEMU runs with `-no-reboot`, so a reboot makes it exit 0).
pub fn power_off() -> ! {
    // SAFETY: reboot(2) with a valid command; it does not return on success.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Flushes and unmounts the root file system, then ends the VM.
pub fn shutdown() -> ! {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    for sub in ["dev/shm", "dev/pts", "dev", "sys/fs/cgroup", "sys", "proc"] {
        let target = cstr(&format!("{ROOTFS}/{sub}"));
        // SAFETY: valid C string.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
    let root = cstr(ROOTFS);
    // SAFETY: valid C string. A busy root is remounted read-only so the journal is clean.
    unsafe {
        if libc::umount2(root.as_ptr(), 0) != 0 {
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            );
        }
    }
    power_off()
}
