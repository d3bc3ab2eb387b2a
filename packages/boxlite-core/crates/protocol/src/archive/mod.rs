//! The tar streams of [`crate::Builtin::Unpack`] and [`crate::Builtin::Pack`], written and read
//! the same way by the host (`copy_in`, `copy_out`) and the guest agent: one top-level entry
//! named after the copied item, a directory's tree below it.
//!
//! Writing is [`pack_item`]; reading is [`unpack_item`], under an [`UnpackPolicy`]: the host
//! unpacks a box's bytes [`UnpackPolicy::confined`], the agent the host's bytes
//! [`UnpackPolicy::trusted`].

use std::ffi::OsStr;
use std::io::{self, Write};
use std::path::Path;

mod unpack;

pub use unpack::{
    entry_components, unpack_item, UnpackError, UnpackPolicy, UnpackReport, MAX_ENTRY_HEADER_BYTES,
};

/// Writes `source` (a file, a symlink or a directory tree, not followed) into `out` as the
/// item `name`; returns `out`, flushed.
pub fn pack_item<W: Write>(out: W, source: &Path, name: &OsStr) -> io::Result<W> {
    let meta = std::fs::symlink_metadata(source)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", source.display())))?;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    if meta.is_dir() {
        builder.append_dir_all(name, source)?;
    } else {
        builder.append_path_with_name(source, name)?;
    }
    let mut out = builder.into_inner()?;
    out.flush()?;
    Ok(out)
}

#[cfg(test)]
mod tests;
