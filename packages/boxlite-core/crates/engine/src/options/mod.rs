//! Runtime and box options as the bindings hand them over (JSON from Python), validated here:
//! the engine is the one place that decides what is in range.
//!
//! One kind of option a file: `runtime.rs` (the home, guest files, registries, image limits),
//! `box_options.rs` (a box's size, image, output and copy limits, and the validation that
//! calls the others), `security.rs` (confinement and per-process limits), `network.rs` (the
//! network spec and port forwards), `volume.rs` (shared host directories).

mod box_options;
mod network;
mod runtime;
mod security;
#[cfg(test)]
mod tests;
mod volume;

pub use box_options::{
    check_max_output_bytes, timeout_from_secs, BoxOptions, COPY_OUT_MAX_BYTES_DEFAULT,
    COPY_OUT_MAX_BYTES_MIN, DISK_SIZE_GB_MAX, MAX_OUTPUT_BYTES_DEFAULT, MAX_OUTPUT_BYTES_MAX,
    MEMORY_MIB_RANGE,
};
pub use network::{NetworkSpec, PortForward, MAX_ALLOW_NET};
pub use runtime::{RuntimeOptions, IMAGE_LIMITS_MIN};
pub use security::SecurityOptions;
pub use volume::{Volume, MAX_VOLUMES};
