//! Whiteouts: `.wh.NAME` hides a file of lower layers, `.wh..wh..opq` everything lower
//! layers put in its directory; malformed ones are refused.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{invalid, Unpacker};

pub(super) const WHITEOUT_PREFIX: &str = ".wh.";
pub(super) const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// The name a whiteout hides (`.wh.NAME`), refusing names that are no file of the directory
/// (`.wh.`, `.wh..`, `.wh...`) and whiteout markers other than the opaque one.
pub(super) fn whiteout_target(name: &str) -> io::Result<Option<&str>> {
    let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(None);
    };
    if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.starts_with(WHITEOUT_PREFIX) {
        return Err(invalid(format!(
            "whiteout {name:?} is malformed (it names no file of its directory); the layer is refused"
        )));
    }
    Ok(Some(hidden))
}

pub(super) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
impl Unpacker {
    /// Opaque whiteout: hide everything lower layers put in `dir`.
    pub(super) fn clear_directory(&mut self, dir: &Path) -> io::Result<()> {
        let host = self.root.join(dir);
        let Ok(entries) = fs::read_dir(&host) else {
            return Ok(());
        };
        for entry in entries {
            let child = dir.join(entry?.file_name());
            if !self.this_layer.contains(&child) {
                remove_any(&self.root.join(&child))?;
                self.forget(&child);
            }
        }
        // Special files live in the manifest only.
        let special: Vec<PathBuf> = self
            .manifest
            .iter()
            .filter(|(p, m)| {
                m.kind.is_special() && p.parent() == Some(dir) && !self.this_layer.contains(*p)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in special {
            self.manifest.remove(&p);
        }
        Ok(())
    }
}
