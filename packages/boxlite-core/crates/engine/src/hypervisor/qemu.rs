//! The QEMU backend: one `qemu-system-<arch>` child process per box on the `microvm` machine.
//!
//! The guest has no ACPI (`acpi=off`: our module-free kernel fails ACPI setup on microvm, and
//! QEMU then passes the virtio-mmio devices on the kernel command line itself), no PCI, one
//! serial console on QEMU's stdout (a pipe the engine drains into a size-capped log), a
//! virtio-serial port for the agent channel, a virtio-rng device, a virtio-balloon device (only
//! for free page reporting), the box's qcow2 overlay as a virtio-blk disk, and optionally a
//! virtio-net device (to passt) and 9p shares (volumes). Without ACPI a fifth virtio-mmio device
//! gets the RTC's interrupt and fails to probe; boxes with more devices run without an RTC
//! instead (the agent sets the clock from the host's hello).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;

use tokio::process::Command;
use tokio::sync::watch;

use super::{Accel, GuestMemory, Hypervisor, VmExit, VmHandle, VmSpec};
use crate::error::{Error, IoContext, Result};
use crate::logs;

/// How long an exited VMM's logs may take to drain (their pipes end with the process).
const LOG_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct QemuBackend {
    binary_name: String,
    version: std::sync::OnceLock<String>,
}

impl Default for QemuBackend {
    fn default() -> Self {
        QemuBackend {
            binary_name: format!("qemu-system-{}", std::env::consts::ARCH),
            version: std::sync::OnceLock::new(),
        }
    }
}

impl QemuBackend {
    /// `BOXLITE_QEMU`, else `qemu-system-<arch>` on PATH.
    pub fn binary(&self) -> Result<PathBuf> {
        if let Some(path) = std::env::var_os("BOXLITE_QEMU") {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(Error::QemuNotFound {
                    binary: path.display().to_string(),
                })
            };
        }
        let dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        dirs.into_iter()
            .map(|d| d.join(&self.binary_name))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::QemuNotFound {
                binary: self.binary_name.clone(),
            })
    }

    /// The command line for `spec` (public for tests and diagnostics).
    pub fn arguments(&self, spec: &VmSpec) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
        // Serial port, rng and disk, plus the network and the shares; then the balloon where a
        // slot is left that keeps the RTC (a box with that many volumes goes without it).
        let required = 3 + usize::from(spec.network_fd.is_some()) + spec.shares.len();
        let balloon = required < MICROVM_SLOTS.len() - 1;
        let devices = required + usize::from(balloon);
        let mut machine = if !cfg!(target_arch = "x86_64") {
            "virt".to_owned()
        } else if devices >= MICROVM_SLOTS.len() {
            // The last slot raises the RTC's interrupt: drop the RTC (the agent sets the guest's
            // clock from the host's hello).
            "microvm,acpi=off,x-option-roms=off,rtc=off".to_owned()
        } else {
            "microvm,acpi=off,x-option-roms=off".to_owned()
        };
        // Each virtio-mmio device names its slot (`bus=`), in MICROVM_SLOTS' order.
        let mut slots = MICROVM_SLOTS.iter();
        let mut device = |model: &str| match slots.next() {
            Some(slot) if cfg!(target_arch = "x86_64") => {
                format!("{model},bus=virtio-mmio-bus.{slot}")
            }
            _ => model.to_owned(),
        };
        let memory = format!("{}M", spec.memory_mib);
        // A file-backed RAM takes the id of the machine's own RAM: a saved state names its RAM
        // by that id, whichever backend held it.
        let ram_id = if cfg!(target_arch = "x86_64") {
            "microvm.ram"
        } else {
            "mach-virt.ram"
        };
        let backend = match &spec.guest_memory {
            GuestMemory::Anonymous => None,
            GuestMemory::WrittenToFile(path) => Some(format!(
                "memory-backend-file,id={ram_id},size={memory},mem-path={},share=on",
                escape(&path.display().to_string())
            )),
            // `readonly=on,rom=off`: the file is opened read-only, the mapping is writable
            // (private: the guest's writes never reach the file).
            GuestMemory::CopyOnWrite(path) => Some(format!(
                "memory-backend-file,id={ram_id},size={memory},mem-path={},share=off,readonly=on,rom=off",
                escape(&path.display().to_string())
            )),
        };
        if backend.is_some() {
            machine.push_str(&format!(",memory-backend={ram_id}"));
        }
        push(&["-M", &machine, "-accel", spec.accel.as_str()]);
        if let Some(backend) = &backend {
            push(&["-object", backend]);
        }
        // Under TCG, "max" is every feature QEMU emulates. The default model (qemu64) advertises
        // AMD features that lead OpenBLAS (numpy) to 3DNow! kernels TCG cannot run: SIGILL.
        match spec.accel {
            Accel::Tcg => push(&["-cpu", "max"]),
            _ => push(&["-cpu", "host"]),
        }
        let smp = spec.cpus.to_string();
        push(&["-m", &memory, "-smp", &smp]);
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        let kernel = spec.kernel.display().to_string();
        let initrd = spec.initrd.display().to_string();
        push(&[
            "-kernel",
            &kernel,
            "-initrd",
            &initrd,
            "-append",
            &spec.cmdline,
        ]);
        // The console goes to QEMU's stdout, a pipe the engine drains into a capped log (see
        // `launch`): a file chardev would grow as long as the guest writes.
        push(&[
            "-chardev",
            "stdio,id=console,signal=off",
            "-serial",
            "chardev:console",
        ]);
        let agent = format!(
            "socket,id=agent,path={},server=on,wait=off",
            escape(&spec.agent_socket.display().to_string())
        );
        push(&["-chardev", &agent]);
        if let Some(qmp) = &spec.qmp_socket {
            // The control channel: pause and resume (see `qmp.rs`).
            push(&["-qmp", &super::qmp::qmp_argument(qmp)]);
        }
        let serial = device("virtio-serial-device,max_ports=2");
        push(&["-device", &serial]);
        let port = format!(
            "virtserialport,chardev=agent,name={}",
            boxlite_protocol::AGENT_PORT_NAME
        );
        push(&["-device", &port]);
        // Entropy for the guest: without it the first blocking getrandom() waits about a second
        // under TCG.
        let rng = device("virtio-rng-device");
        push(&["-device", &rng]);
        // Free page reporting: the guest hands back the memory it frees (2 MiB blocks), which
        // QEMU drops from the VM's resident memory; without it a box keeps the peak of what it
        // ever used. The balloon is never inflated.
        if balloon {
            let balloon = device("virtio-balloon-device,free-page-reporting=on");
            push(&["-device", &balloon]);
        }
        if spec.network_fd.is_some() {
            // The socket is placed at descriptor 3 when QEMU starts (see `launch`).
            let net = device("virtio-net-device,netdev=net0");
            push(&[
                "-netdev",
                "stream,id=net0,addr.type=fd,addr.str=3",
                "-device",
                &net,
            ]);
        }
        // Shares come last: with more than four virtio-mmio devices the guest loses its RTC
        // (see the module comment), which the agent makes up for by taking the host's time.
        //
        // `mapped-xattr`: the guest's owners, modes, device nodes, fifos and symlinks are kept
        // in `user.virtfs.*` extended attributes, never applied to the host file, which stays a
        // plain file or directory owned by the user running QEMU (mode 0600, directories 0700);
        // guest symlinks are files holding the target, and the host's own symlinks in the share
        // are never followed (QEMU walks paths with O_NOFOLLOW). `security_model=none` would
        // chmod/chown/mknod for real: setuid files and device nodes on the host.
        for (i, (tag, path, readonly)) in spec.shares.iter().enumerate() {
            let mut fsdev = format!(
                "local,id=fs{i},path={},security_model=mapped-xattr",
                escape(&path.display().to_string())
            );
            if *readonly {
                fsdev.push_str(",readonly=on");
            }
            let share = device(&format!("virtio-9p-device,fsdev=fs{i},mount_tag={tag}"));
            push(&["-fsdev", &fsdev, "-device", &share]);
        }
        let confinement = &spec.confinement;
        if confinement.seccomp {
            // Raising privileges stays allowed only for QEMU's own drop to `run_as`.
            let elevate = if confinement.run_as.is_some() {
                "allow"
            } else {
                "deny"
            };
            let sandbox = format!(
                "on,obsolete=deny,elevateprivileges={elevate},spawn=deny,resourcecontrol=deny"
            );
            push(&["-sandbox", &sandbox]);
        }
        let mut run_with = Vec::new();
        if let Some(dir) = &confinement.chroot {
            run_with.push(format!("chroot={}", escape(&dir.display().to_string())));
        }
        if let Some((uid, gid)) = confinement.run_as {
            run_with.push(format!("user={uid}:{gid}"));
        }
        if !run_with.is_empty() {
            push(&["-run-with", &run_with.join(",")]);
        }
        if spec.incoming {
            // A snapshot's restore: the state is loaded over QMP (`migrate-incoming`).
            push(&["-incoming", "defer"]);
        }
        if let Some(disk) = &spec.root_disk {
            // `auto-read-only=off`: the disk stays open read-write when a migration (a
            // snapshot) hands it over and takes it back; with it on, QEMU reopens the file by
            // path then, which a jailed VMM cannot (its migration fails: "Bad address").
            let drive = format!(
                "id=root,if=none,format=qcow2,discard=unmap,auto-read-only=off,file={}",
                escape(&disk.display().to_string())
            );
            let disk = device("virtio-blk-device,drive=root");
            push(&["-drive", &drive, "-device", &disk]);
        }
        args
    }
}

/// The virtio-mmio slots of `microvm` without ACPI, in the order devices take them. Slot `i`
/// raises IRQ 5 + i; slot 3's IRQ 8 is the RTC's, where a device fails to probe unless the
/// machine has no RTC (which costs the guest about 1.2 s of boot under TCG): it comes last.
/// (Left to itself, QEMU fills the slots from the last down, slot 3 fifth.)
const MICROVM_SLOTS: [usize; 8] = [7, 6, 5, 4, 2, 1, 0, 3];

/// `RLIMIT_NOFILE` of the VMM process.
const VMM_MAX_OPEN_FILES: u64 = 1024;

/// The version from `qemu-system-* --version`'s first line (`QEMU emulator version 10.0.2
/// (Debian ...)`: `10.0.2 (Debian ...)`, the packaging included).
fn parse_version(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    let rest = line.split_once("version ")?.1.trim();
    (!rest.is_empty()).then(|| rest.to_owned())
}

/// QEMU option values separate on ','; a literal comma is written twice.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

struct QemuVm {
    pid: Option<u32>,
    exit: watch::Receiver<Option<VmExit>>,
    killed: Mutex<bool>,
}

impl VmHandle for QemuVm {
    fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn kill(&self) {
        let mut killed = self.killed.lock().expect("kill lock");
        if let (Some(pid), false, None) = (self.pid, *killed, self.exit.borrow().as_ref()) {
            // SAFETY: signalling our own child, which is not reaped before exit_watch is set.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            *killed = true;
        }
    }

    fn exit_watch(&self) -> watch::Receiver<Option<VmExit>> {
        self.exit.clone()
    }
}

impl Hypervisor for QemuBackend {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn check_available(&self) -> Result<()> {
        self.binary().map(|_| ())
    }

    /// The version `qemu-system-* --version` prints (asked once per process).
    fn version(&self) -> Result<String> {
        if let Some(v) = self.version.get() {
            return Ok(v.clone());
        }
        let binary = self.binary()?;
        let out = std::process::Command::new(&binary)
            .arg("--version")
            .output()
            .context(|| format!("run {} --version", binary.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = parse_version(&text).ok_or_else(|| Error::Io {
            context: format!("read the version of {}", binary.display()),
            source: std::io::Error::other(format!("unexpected output: {}", text.trim())),
        })?;
        Ok(self.version.get_or_init(|| version).clone())
    }

    fn launch(&self, spec: &VmSpec) -> Result<Box<dyn VmHandle>> {
        let binary = self.binary()?;
        let (console, console_task) =
            logs::capped_pipe(&spec.console_log, logs::CONSOLE_LOG_BYTES)?;
        let (vmm_log, vmm_log_task) = logs::capped_pipe(&spec.vmm_log, logs::PROCESS_LOG_BYTES)?;
        let mut command = Command::new(&binary);
        command
            .args(self.arguments(spec))
            // A minimal environment: the VMM needs nothing of ours.
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::from(console))
            .stderr(Stdio::from(vmm_log))
            // Its own process group: a Ctrl-C meant for the Python program must not kill boxes
            // behind its back; the runtime stops them in order.
            .process_group(0)
            .kill_on_drop(false);
        let close_fds = spec.confinement.close_fds;
        let network_fd = spec.network_fd;
        // SAFETY: only async-signal-safe system calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // A write to a log nobody drains any more (its owner process died while the box
                // was kept) fails instead of killing the VMM.
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                // No core dumps of guest memory; a VMM needs few descriptors.
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                let files = libc::rlimit {
                    rlim_cur: VMM_MAX_OPEN_FILES,
                    rlim_max: VMM_MAX_OPEN_FILES,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &files);
                if let Some(fd) = network_fd {
                    // Also marks every other descriptor close-on-exec.
                    crate::network::place_fds(&[fd])?;
                } else if close_fds {
                    // Mark rather than close: the spawn machinery's own error pipe is already
                    // close-on-exec, and must stay open until the exec.
                    libc::syscall(
                        libc::SYS_close_range,
                        3u32,
                        u32::MAX,
                        libc::CLOSE_RANGE_CLOEXEC,
                    );
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .context(|| format!("start {}", binary.display()))?;
        let pid = child.id();
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            use std::os::unix::process::ExitStatusExt;
            let status = child.wait().await;
            // The logs are complete before anyone learns of the exit (crash messages read them).
            for task in [console_task, vmm_log_task] {
                let _ = tokio::time::timeout(LOG_DRAIN_TIMEOUT, task).await;
            }
            let exit = match status {
                Ok(status) => VmExit {
                    code: status.code(),
                    signal: status.signal(),
                },
                Err(_) => VmExit {
                    code: None,
                    signal: None,
                },
            };
            let _ = tx.send(Some(exit));
        });
        tracing::debug!(name = %spec.name, pid, accel = %spec.accel, "launched qemu");
        Ok(Box::new(QemuVm {
            pid,
            exit: rx,
            killed: Mutex::new(false),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::Confinement;

    fn spec(accel: Accel) -> VmSpec {
        VmSpec {
            name: "t".into(),
            accel,
            kernel: "/k/vmlinux".into(),
            initrd: "/k/initramfs.cpio".into(),
            cmdline: "console=ttyS0".into(),
            cpus: 2,
            memory_mib: 512,
            root_disk: Some("/boxes/a,b/disk.qcow2".into()),
            agent_socket: "/boxes/a/agent.sock".into(),
            qmp_socket: Some("/boxes/a/qmp.sock".into()),
            console_log: "/boxes/a/console.log".into(),
            vmm_log: "/boxes/a/vmm.log".into(),
            confinement: Default::default(),
            network_fd: None,
            shares: Vec::new(),
            incoming: false,
            guest_memory: GuestMemory::Anonymous,
        }
    }

    #[test]
    fn confinement_becomes_sandbox_and_run_with() {
        let mut jailed = spec(Accel::Tcg);
        jailed.confinement = Confinement {
            seccomp: true,
            chroot: Some("/boxes/a/jail".into()),
            run_as: Some((65534, 65534)),
            close_fds: true,
        };
        let args = QemuBackend::default().arguments(&jailed).join(" ");
        assert!(
            args.contains("-sandbox on,obsolete=deny,elevateprivileges=allow,spawn=deny"),
            "{args}"
        );
        assert!(
            args.contains("-run-with chroot=/boxes/a/jail,user=65534:65534"),
            "{args}"
        );
        let mut filtered = spec(Accel::Tcg);
        filtered.confinement.seccomp = true;
        let args = QemuBackend::default().arguments(&filtered).join(" ");
        assert!(args.contains("elevateprivileges=deny"), "{args}");
        assert!(!args.contains("-run-with"), "{args}");
        assert!(!QemuBackend::default()
            .arguments(&spec(Accel::Tcg))
            .join(" ")
            .contains("-sandbox"));
    }

    #[test]
    fn command_line_describes_the_microvm() {
        let args = QemuBackend::default()
            .arguments(&spec(Accel::Tcg))
            .join(" ");
        if cfg!(target_arch = "x86_64") {
            assert!(args.contains("-M microvm,acpi=off"), "{args}");
        }
        for needle in [
            "-accel tcg",
            "-m 512M",
            "-smp 2",
            "-no-reboot",
            "-nodefaults",
            "-kernel /k/vmlinux",
            "name=boxlite.agent",
            "-device virtio-balloon-device,free-page-reporting=on",
            "-qmp unix:/boxes/a/qmp.sock,server=on,wait=off",
            // The console goes through a pipe into a capped log, never straight to a file.
            "-chardev stdio,id=console,signal=off -serial chardev:console",
        ] {
            assert!(args.contains(needle), "{needle} missing from {args}");
        }
        // Commas in paths are doubled so QEMU does not split the option there.
        assert!(args.contains("file=/boxes/a,,b/disk.qcow2"), "{args}");
        assert!(
            args.contains("-cpu max"),
            "TCG emulates every CPU feature it can"
        );
        assert!(QemuBackend::default()
            .arguments(&spec(Accel::Kvm))
            .join(" ")
            .contains("-cpu host"));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn devices_take_the_slots_that_keep_the_rtc_and_the_balloon_gives_way() {
        let with = |shares: usize| {
            let mut box_spec = spec(Accel::Tcg);
            box_spec.network_fd = Some(3);
            box_spec.shares = (0..shares)
                .map(|i| (format!("vol{i}"), format!("/host/{i}").into(), false))
                .collect();
            QemuBackend::default().arguments(&box_spec).join(" ")
        };
        let slots = |args: &str| -> Vec<usize> {
            args.split("bus=virtio-mmio-bus.")
                .skip(1)
                .map(|rest| rest[..1].parse().expect("a slot number"))
                .collect()
        };
        // Serial, rng, balloon, network and disk: the first five slots, none of them IRQ 8's.
        let plain = with(0);
        assert!(
            plain.contains(
                "-device virtio-balloon-device,free-page-reporting=on,bus=virtio-mmio-bus.5"
            ),
            "{plain}"
        );
        assert_eq!(slots(&plain), [7, 6, 5, 4, 2], "{plain}");
        assert!(!plain.contains("rtc=off"), "{plain}");
        // Two volumes: seven devices, the RTC kept.
        assert_eq!(slots(&with(2)), [7, 6, 5, 4, 2, 1, 0]);
        assert!(!with(2).contains("rtc=off"));
        // Three volumes: no slot left for the balloon but the RTC's; the box goes without it.
        let three = with(3);
        assert!(!three.contains("virtio-balloon"), "{three}");
        assert!(!three.contains("rtc=off"), "{three}");
        assert!(!slots(&three).contains(&3), "{three}");
        // Four (the most with a network): every slot, the RTC's too, and no RTC.
        let four = with(4);
        assert_eq!(slots(&four).len(), 8, "{four}");
        assert!(four.contains("rtc=off"), "{four}");
    }

    #[test]
    fn shares_keep_guest_metadata_off_the_host_files() {
        let mut shared = spec(Accel::Tcg);
        shared.shares = vec![
            ("vol0".into(), "/host/in,put".into(), true),
            ("vol1".into(), "/host/out".into(), false),
        ];
        let args = QemuBackend::default().arguments(&shared).join(" ");
        assert!(
            args.contains(
                "-fsdev local,id=fs0,path=/host/in,,put,security_model=mapped-xattr,readonly=on"
            ),
            "{args}"
        );
        assert!(
            args.contains("-fsdev local,id=fs1,path=/host/out,security_model=mapped-xattr -device"),
            "{args}"
        );
        assert!(!args.contains("security_model=none"), "{args}");
        assert!(!args.contains("passthrough"), "{args}");
    }

    #[test]
    fn a_restore_waits_for_its_state_and_the_version_is_read() {
        let mut restored = spec(Accel::Tcg);
        assert!(!QemuBackend::default()
            .arguments(&restored)
            .join(" ")
            .contains("-incoming"));
        restored.incoming = true;
        let args = QemuBackend::default().arguments(&restored).join(" ");
        assert!(args.contains("-incoming defer"), "{args}");
        // A jailed VMM cannot reopen its disk by path when a migration hands it over.
        assert!(args.contains("auto-read-only=off,file="), "{args}");
        assert_eq!(
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)\nCopyright"),
            Some("10.0.2 (Debian 1:10.0.2+ds-2)".into())
        );
        assert_eq!(parse_version("nonsense"), None);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn guest_memory_in_a_file_replaces_the_machine_ram_under_its_id() {
        let mut vm = spec(Accel::Tcg);
        assert!(!QemuBackend::default()
            .arguments(&vm)
            .join(" ")
            .contains("memory-backend"));
        vm.guest_memory = GuestMemory::CopyOnWrite("/snap,s/memory".into());
        let args = QemuBackend::default().arguments(&vm).join(" ");
        // Opened read-only, mapped private: the guest's writes never reach the file.
        assert!(
            args.contains("-object memory-backend-file,id=microvm.ram,size=512M,mem-path=/snap,,s/memory,share=off,readonly=on,rom=off"),
            "{args}"
        );
        assert!(
            args.contains(",memory-backend=microvm.ram -accel"),
            "{args}"
        );
        vm.guest_memory = GuestMemory::WrittenToFile("/snap/memory".into());
        let args = QemuBackend::default().arguments(&vm).join(" ");
        assert!(args.contains("mem-path=/snap/memory,share=on -"), "{args}");
    }

    #[test]
    fn missing_binary_names_the_install_command() {
        std::env::set_var("BOXLITE_QEMU", "/nonexistent/qemu");
        let err = QemuBackend::default().binary().unwrap_err().to_string();
        std::env::remove_var("BOXLITE_QEMU");
        assert!(err.contains("apt-get install qemu-system-x86"), "{err}");
    }
}
