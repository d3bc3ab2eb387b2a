//! Unpacking an item's archive as one path, confined to it: every entry is created relative to
//! a directory descriptor reached one component at a time with `O_NOFOLLOW` (no path is ever
//! resolved as a string), files are written under a temporary name and renamed into place only
//! once complete, hard links may only point to files this same unpack wrote, and the archive's
//! size (headers included) is capped before a byte of it is written.
//!
//! This file holds [`unpack_item`] and the unpacker's state; the rest is one concern a file:
//! `policy.rs` (what an unpack keeps and trusts, what it reports), `error.rs`
//! ([`UnpackError`]), `meter.rs` (the byte count and the cap on one entry's headers),
//! `entry.rs` (an entry's path and what each entry type becomes), `walk.rs` (directories
//! reached one component at a time, entries placed by rename), `file.rs` (a regular file's
//! content, checked against the free space), `metadata.rs` (owners, modes and times).

mod entry;
mod error;
mod file;
mod metadata;
mod meter;
mod policy;
mod walk;

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{Mode, OFlags};

pub use entry::entry_components;
pub use error::UnpackError;
use error::{errno_error, io_error};
pub use meter::MAX_ENTRY_HEADER_BYTES;
use meter::{Meter, Metered};
pub use policy::{UnpackPolicy, UnpackReport};

/// Metadata a directory gets once everything below it is written.
pub(super) struct DirMeta {
    pub(super) rel: Vec<OsString>,
    pub(super) mode: u32,
    pub(super) mtime: Option<u64>,
    pub(super) owner: Option<(u64, u64)>,
}

pub(super) struct Unpacker<'a> {
    pub(super) policy: &'a UnpackPolicy,
    /// The directory that holds the item (the caller's, trusted).
    pub(super) root: OwnedFd,
    pub(super) root_path: PathBuf,
    pub(super) item: OsString,
    pub(super) used: u64,
    /// Regular files this unpack wrote (paths relative to `root`): the only hard-link targets.
    pub(super) files: HashSet<Vec<OsString>>,
    pub(super) dirs: Vec<DirMeta>,
    /// The last parent directory walked to, as the same walk would find it again: this unpack
    /// never removes or replaces a directory.
    pub(super) cached: Option<(Vec<OsString>, Rc<OwnedFd>)>,
    pub(super) temp_counter: u64,
    pub(super) report: UnpackReport,
}

/// Unpacks an item's tar stream (as [`super::pack_item`] writes it) as `target`, under
/// `policy`. `target`'s parent is the caller's and may be reached through symlinks (it is
/// created if missing); everything at and below `target` is governed by the policy.
/// Directories get their own metadata last, so a read-only one can still be filled.
pub fn unpack_item<R: Read>(
    reader: R,
    target: &Path,
    policy: &UnpackPolicy,
) -> Result<UnpackReport, UnpackError> {
    let item = target.file_name().ok_or_else(|| UnpackError::Refused {
        entry: target.display().to_string(),
        reason: "the destination has no file name".into(),
    })?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(io_error(format!("create {}", parent.display())))?;
    let root = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_error(format!("open {}", parent.display())))?;
    let meter = Rc::new(Meter::default());
    let mut archive = tar::Archive::new(Metered {
        inner: reader,
        meter: meter.clone(),
    });
    let mut unpacker = Unpacker {
        policy,
        root,
        root_path: parent.to_path_buf(),
        item: item.to_os_string(),
        used: 0,
        files: HashSet::new(),
        dirs: Vec::new(),
        cached: None,
        temp_counter: 0,
        report: UnpackReport::default(),
    };
    let mut entries = archive.entries().map_err(io_error("reading the archive"))?;
    loop {
        meter.begin_headers();
        let next = entries.next();
        let header_bytes = meter.end_headers();
        unpacker.charge(header_bytes, "(headers)")?;
        let Some(entry) = next else { break };
        let entry = entry.map_err(io_error("reading the archive"))?;
        unpacker.entry(entry)?;
    }
    unpacker.finish_dirs()?;
    unpacker.report.bytes = meter.total.get();
    Ok(unpacker.report)
}

impl Unpacker<'_> {
    pub(super) fn charge(&mut self, bytes: u64, entry: &str) -> Result<(), UnpackError> {
        let total = self.used.saturating_add(bytes);
        if total > self.policy.max_bytes {
            return Err(UnpackError::TooLarge {
                entry: entry.into(),
                needed: bytes,
                used: self.used,
                limit: self.policy.max_bytes,
            });
        }
        self.used = total;
        Ok(())
    }

    /// The path of `rel` (relative to the root) for messages.
    pub(super) fn show(&self, rel: &[OsString]) -> String {
        let mut path = self.root_path.clone();
        for part in rel {
            path.push(part);
        }
        path.display().to_string()
    }
}
