//! Applying image layers into a staging directory without root.
//!
//! Files are written with owner-accessible modes as the current user; the real owner, group
//! and mode of every entry are recorded in a [`Manifest`] and later written into the ext4 image
//! by `debugfs` (see `ext4.rs`). Device nodes are recorded only (a non-root user cannot create
//! them) and created by `debugfs` too.
//!
//! Paths are resolved inside the staging root, symlinks included: an absolute symlink in the
//! image (`/opt/escape -> /`) never makes a later entry land outside the root.
//!
//! Layers are hostile input: the bytes written and the entries created per image are capped
//! ([`ImageLimits`]), a file's declared size is checked before anything is written (a 1 TiB
//! sparse entry fails at once), names the ext4 fix-up could not express safely (control
//! characters, components over 255 bytes, paths over 4,095 bytes) and malformed whiteouts
//! (`.wh.`, `.wh..`, `.wh...`, unknown `.wh..wh.` markers) are refused.
//!
//! This file holds the [`Unpacker`] and its state; the rest is one concern a file:
//! `manifest.rs` (the recorded metadata of each entry), `limits.rs` ([`ImageLimits`] and the
//! byte and free-space reservation), `paths.rs` (entry names checked and normalised, parents
//! resolved inside the root), `whiteout.rs` (whiteouts and opaque directories), `layer.rs`
//! (applying one layer's entries).

mod layer;
mod limits;
mod manifest;
mod paths;
#[cfg(test)]
mod tests;
mod whiteout;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub use limits::{ImageLimits, DEFAULT_IMAGE_MAX_BYTES, DEFAULT_IMAGE_MAX_ENTRIES};
pub use manifest::{Kind, Manifest, Meta};
pub use paths::{MAX_NAME_BYTES, MAX_PATH_BYTES};

pub struct Unpacker {
    root: PathBuf,
    manifest: Manifest,
    /// Paths written by the layer being applied (an opaque whiteout keeps these).
    this_layer: HashSet<PathBuf>,
    limits: ImageLimits,
    /// Bytes this unpacker may still write before the file system runs short (see
    /// [`Unpacker::set_free_space`]); `None`: not checked.
    free_space: Option<u64>,
    /// File content written so far, all layers.
    written: u64,
    /// Tar entries seen so far, all layers.
    entries: u64,
}

pub(super) fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Unpacker {
    pub fn new(root: &Path) -> io::Result<Unpacker> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)?;
        let mut manifest = Manifest::new();
        manifest.insert(
            PathBuf::new(),
            Meta {
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
        );
        Ok(Unpacker {
            root: root.to_owned(),
            manifest,
            this_layer: HashSet::new(),
            limits: ImageLimits::default(),
            free_space: None,
            written: 0,
            entries: 0,
        })
    }

    /// Caps what the image may write (default: [`ImageLimits::default`]).
    pub fn set_limits(&mut self, limits: ImageLimits) {
        self.limits = limits;
    }

    /// Bytes of file content the staging file system can take for this image; beyond it the
    /// unpack fails with an error saying so, before the disk is full.
    pub fn set_free_space(&mut self, bytes: u64) {
        self.free_space = Some(bytes);
    }

    /// File content written so far, in bytes.
    pub fn written(&self) -> u64 {
        self.written
    }
    pub fn into_manifest(self) -> Manifest {
        self.manifest
    }

    fn forget(&mut self, rel: &Path) {
        let doomed: Vec<PathBuf> = self
            .manifest
            .range(rel.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(rel))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.manifest.remove(&p);
        }
    }
}
