//! The BoxLite engine: every box is a real VM with its own kernel, booted from an OCI image.
//!
//! Code map: [`runtime`] owns a home directory and its boxes; [`image`] turns OCI images into
//! cached base disks; [`disk`] gives each box a copy-on-write overlay; [`hypervisor`] starts VMs
//! (QEMU today) on the accelerator [`hypervisor::accel`] picks; [`agent`] is the host end of
//! the channel to the guest agent; [`litebox`] ties them into one box with executions.

pub mod agent;
mod agent_socket;
pub mod assets;
pub mod boot;
pub mod disk;
pub mod egress;
pub mod error;
pub mod host_interfaces;
pub mod hypervisor;
pub mod image;
pub mod litebox;
pub mod logs;
pub mod network;
pub mod options;
pub mod runtime;
pub mod snapshot;
pub mod sqlite;
pub mod state;
#[cfg(test)]
mod testing;
pub mod tsc;

pub use error::{Error, ErrorKind, Result};
pub use litebox::{BoxInfo, BoxStatus, ExecOutput, ExecSpec, Execution, LiteBox};
pub use options::{BoxOptions, RuntimeOptions};
pub use runtime::Runtime;
