//! What an unpack keeps of the archive and how far it trusts the tree it writes into
//! ([`UnpackPolicy`]: confined for a box's bytes, trusted for the host's), and what it did.

/// What an unpack keeps of the archive and how far it trusts the tree it writes into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackPolicy {
    /// The most bytes the archive may hold: file contents plus every entry's headers.
    pub max_bytes: u64,
    /// Owners from the archive (setting them needs root); otherwise files belong to the caller.
    pub preserve_owners: bool,
    /// setuid, setgid and sticky bits from the archive; otherwise modes are masked to `0o777`.
    pub special_mode_bits: bool,
    /// Device nodes and fifos are created; otherwise they (and anything else that is not a
    /// file, a directory or a link) are skipped and listed in [`UnpackReport::skipped`].
    pub special_files: bool,
    /// Symlinks met on the way to an entry are followed, as a plain `tar x` does; otherwise an
    /// entry is never written through a symlink, whether the archive made it or it was there.
    pub follow_symlinks: bool,
}

impl UnpackPolicy {
    /// For bytes the host must not trust (a box's `copy_out`): nothing written through a
    /// symlink, permission bits only, no special files, owners not kept, at most `max_bytes`.
    pub fn confined(max_bytes: u64) -> UnpackPolicy {
        UnpackPolicy {
            max_bytes,
            preserve_owners: false,
            special_mode_bits: false,
            special_files: false,
            follow_symlinks: false,
        }
    }

    /// For a trusted archive unpacked where its writer may put anything (`copy_in`, run inside
    /// the box): owners, full modes, device nodes and fifos kept, the tree's symlinks followed.
    pub fn trusted() -> UnpackPolicy {
        UnpackPolicy {
            max_bytes: u64::MAX,
            preserve_owners: true,
            special_mode_bits: true,
            special_files: true,
            follow_symlinks: true,
        }
    }
}

/// What an unpack did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Bytes of the archive consumed (headers and contents).
    pub bytes: u64,
    /// Entries written.
    pub entries: u64,
    /// Entries left out by the policy (special files), as `path (kind)`.
    pub skipped: Vec<String>,
}
