//! How a box's VMM is confined (seccomp, chroot jail, unprivileged user, closed descriptors),
//! built from the box's `SecurityOptions`.

use super::LiteBox;
use crate::error::{IoContext, Result};
use crate::hypervisor::Confinement;

/// The unprivileged uid and gid a jailed VMM runs as.
const NOBODY: u32 = 65534;

impl LiteBox {
    /// How the VMM is confined, from the box's `SecurityOptions`.
    pub(super) fn confinement(&self) -> Result<Confinement> {
        let security = &self.options.security;
        // SAFETY: geteuid has no preconditions.
        let privileged = unsafe { libc::geteuid() } == 0;
        // QEMU's 9p server reaches shared directories by path, with its own identity: a box
        // with volumes keeps the VMM out of the jail (seccomp and the rest still apply).
        let (chroot, run_as) =
            if security.jailer_enabled && privileged && self.options.volumes.is_empty() {
                // Everything the VMM needs is open before it enters the jail: an empty directory.
                let jail = self.dir.join("jail");
                std::fs::create_dir_all(&jail).context(|| format!("create {}", jail.display()))?;
                (Some(jail), Some((NOBODY, NOBODY)))
            } else {
                (None, None)
            };
        Ok(Confinement {
            seccomp: security.seccomp_enabled,
            chroot,
            run_as,
            close_fds: security.close_fds,
        })
    }
}
