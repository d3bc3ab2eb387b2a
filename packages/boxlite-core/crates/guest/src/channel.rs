//! The guest end of the host channel: a virtio-serial port.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use boxlite_protocol::{blocking, GuestMessage, HostMessage, AGENT_PORT_NAME, PROTOCOL_VERSION};

use crate::system;

pub struct Port {
    reader: Mutex<BufReader<File>>,
    writer: Mutex<File>,
    /// The kernel release this agent says hello with.
    kernel_release: OnceLock<String>,
    /// Whether the agent said hello and the host has not answered yet (a
    /// [`HostMessage::HelloAgain`] then needs no second hello).
    awaiting_host_hello: AtomicBool,
}

fn find_port_device() -> io::Result<PathBuf> {
    // Ports appear under /sys/class/virtio-ports/vportNpM with their name in `name`.
    for _ in 0..1000 {
        if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
            for entry in entries.flatten() {
                let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if name.trim() == AGENT_PORT_NAME {
                    return Ok(PathBuf::from("/dev").join(entry.file_name()));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no virtio-serial port named {AGENT_PORT_NAME}"),
    ))
}

impl Port {
    pub fn open() -> io::Result<Port> {
        let path = find_port_device()?;
        let file = fs::OpenOptions::new().read(true).write(true).open(&path)?;
        let writer = file.try_clone()?;
        Ok(Port {
            reader: Mutex::new(BufReader::with_capacity(256 * 1024, file)),
            writer: Mutex::new(writer),
            kernel_release: OnceLock::new(),
            awaiting_host_hello: AtomicBool::new(false),
        })
    }

    /// Blocks until the host side of the port is connected (the port reports POLLHUP until then).
    pub fn wait_for_host(&self) {
        let reader = self.reader.lock().expect("port reader lock");
        let fd = reader.get_ref().as_raw_fd();
        loop {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, 100) };
            if rc > 0 && pfd.revents & libc::POLLHUP == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn send_hello(&self, kernel_release: &str) -> io::Result<()> {
        let kernel_release = self
            .kernel_release
            .get_or_init(|| kernel_release.to_owned());
        self.awaiting_host_hello.store(true, Ordering::SeqCst);
        self.send(&GuestMessage::Hello {
            version: PROTOCOL_VERSION,
            kernel_release: kernel_release.clone(),
            uptime_ms: system::uptime_ms(),
        })
    }

    /// Sends one message; frames from different threads never interleave.
    pub fn send(&self, msg: &GuestMessage) -> io::Result<()> {
        let mut writer = self.writer.lock().expect("port writer lock");
        blocking::write_message(&mut *writer, msg).map_err(|e| io::Error::other(e.to_string()))
    }

    /// The next message from the host; `None` once the host disconnected or spoke an
    /// incompatible protocol (the caller then waits for a new connection).
    pub fn receive(&self) -> Option<HostMessage> {
        let mut reader = self.reader.lock().expect("port reader lock");
        loop {
            match blocking::read_message::<HostMessage, _>(&mut *reader) {
                Ok(Some(HostMessage::Hello { version, .. })) if version != PROTOCOL_VERSION => {
                    drop(reader);
                    let _ = self.send(&GuestMessage::Error {
                        exec_id: None,
                        message: format!(
                            "guest speaks protocol {PROTOCOL_VERSION}, host speaks {version}"
                        ),
                    });
                    std::thread::sleep(Duration::from_millis(100));
                    return None;
                }
                Ok(Some(HostMessage::Hello {
                    unix_time_ns,
                    entropy,
                    ..
                })) => {
                    // Before anything else this connection asks: a restored or forked guest
                    // must not hand out the random numbers its snapshot would.
                    self.awaiting_host_hello.store(false, Ordering::SeqCst);
                    system::add_entropy(&entropy.concat());
                    system::set_clock(unix_time_ns);
                    continue;
                }
                Ok(Some(HostMessage::HelloAgain)) => {
                    if !self.awaiting_host_hello.load(Ordering::SeqCst) {
                        // A new host on a connection this agent never saw open (restored
                        // from a snapshot while reading the old one): say hello to it.
                        let release = self.kernel_release.get().cloned().unwrap_or_default();
                        if let Err(e) = self.send_hello(&release) {
                            system::log(&format!("hello failed: {e}"));
                        }
                    }
                    continue;
                }
                Ok(Some(msg)) => return Some(msg),
                Ok(None) => return None,
                Err(e) => {
                    system::log(&format!("channel read failed: {e}"));
                    // Resynchronising inside a byte stream is not possible: drop buffered bytes
                    // and wait for the host to reconnect.
                    *reader =
                        BufReader::with_capacity(256 * 1024, reader.get_ref().try_clone().ok()?);
                    std::thread::sleep(Duration::from_millis(50));
                    return None;
                }
            }
        }
    }
}
