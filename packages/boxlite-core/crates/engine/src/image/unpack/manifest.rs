//! What the unpacked tree holds: each entry's kind and its intended owner, group and mode,
//! written into the ext4 image later by `debugfs` (the staged files are the user's own).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// What an entry in the final tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
}

impl Kind {
    /// The `S_IFMT` bits of this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            Kind::File => 0o100000,
            Kind::Dir => 0o040000,
            Kind::Symlink => 0o120000,
            Kind::Fifo => 0o010000,
            Kind::CharDevice { .. } => 0o020000,
            Kind::BlockDevice { .. } => 0o060000,
        }
    }

    /// Device nodes and fifos exist only in the manifest until `debugfs` makes them.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            Kind::Fifo | Kind::CharDevice { .. } | Kind::BlockDevice { .. }
        )
    }
}

/// The intended metadata of one entry, keyed by its path relative to the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Every entry of the unpacked tree with its intended metadata (the root is `""`).
pub type Manifest = BTreeMap<PathBuf, Meta>;
