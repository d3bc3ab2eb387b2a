//! boxlite-guest: PID 1 inside every box.
//!
//! It runs from our initramfs, mounts the box's root file system (`/dev/vda`, ext4) at
//! [`ROOTFS`], serves the host over the virtio-serial port named
//! [`boxlite_protocol::AGENT_PORT_NAME`], and runs each execution chrooted into the root
//! file system. It is linked statically against glibc and must therefore do no DNS or
//! user-name lookups itself.

mod builtin;
mod channel;
mod cmdline;
mod exec;
mod log;
mod metrics;
mod network;
mod spawn;
mod system;
mod users;
mod workers;

use std::sync::Arc;

use boxlite_protocol::HostMessage;

/// Where the box's root file system is mounted; executions are chrooted here.
pub const ROOTFS: &str = "/rootfs";

fn main() {
    if std::process::id() != 1 {
        eprintln!("boxlite-guest: must run as PID 1 inside a box");
        std::process::exit(2);
    }
    let boot = match system::boot() {
        Ok(boot) => boot,
        Err(e) => {
            system::log(&format!("boot failed: {e}"));
            system::power_off();
        }
    };
    let port = match channel::Port::open() {
        Ok(port) => Arc::new(port),
        Err(e) => {
            system::log(&format!("cannot open the host channel: {e}"));
            system::power_off();
        }
    };
    let executions = exec::Executions::start(port.clone(), boot.has_rootfs);

    loop {
        // Each iteration serves one host connection; the host may reconnect (another process
        // reattaching to the box), and running executions survive that.
        port.wait_for_host();
        if let Err(e) = port.send_hello(&boot.kernel_release) {
            system::log(&format!("hello failed: {e}"));
            continue;
        }
        while let Some(msg) = port.receive() {
            match msg {
                HostMessage::Shutdown => {
                    executions.kill_all();
                    system::shutdown();
                }
                other => executions.handle(other),
            }
        }
    }
}
