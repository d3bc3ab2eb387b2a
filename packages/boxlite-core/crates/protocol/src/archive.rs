//! The tar streams of [`crate::Builtin::Unpack`] and [`crate::Builtin::Pack`], written and read
//! the same way by the host (`copy_in`, `copy_out`) and the guest agent: one top-level entry
//! named after the copied item, a directory's tree below it.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

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

/// Where an entry of an item's archive lands when the item becomes `target`: its first
/// component (the item's own name) is replaced by `target`; `..` and absolute paths are refused.
pub fn entry_target(target: &Path, entry: &Path) -> io::Result<PathBuf> {
    let mut rest = PathBuf::new();
    let mut parts = entry.components().filter(|c| *c != Component::CurDir);
    parts.next();
    for part in parts {
        match part {
            Component::Normal(p) => rest.push(p),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("archive entry {entry:?} leaves its directory"),
                ))
            }
        }
    }
    // (Joining an empty path would add a trailing slash.)
    Ok(if rest.as_os_str().is_empty() {
        target.to_path_buf()
    } else {
        target.join(rest)
    })
}

/// Unpacks an item's archive as `target`, with what `archive`'s settings preserve (modes,
/// owners, times). Directories get their own metadata last, so a read-only one can still be
/// filled.
pub fn unpack_item<R: Read>(archive: &mut tar::Archive<R>, target: &Path) -> io::Result<()> {
    let mut directories = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry_target(target, &entry.path()?)?;
        if entry.header().entry_type().is_dir() {
            std::fs::create_dir_all(&path)?;
            directories.push((path, entry));
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        entry
            .unpack(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    }
    for (path, mut entry) in directories.into_iter().rev() {
        entry.unpack(&path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_land_under_the_target_and_never_outside() {
        let t = Path::new("/dest");
        assert_eq!(
            entry_target(t, Path::new("item")).unwrap(),
            Path::new("/dest")
        );
        assert_eq!(
            entry_target(t, Path::new("./item/a/b")).unwrap(),
            Path::new("/dest/a/b")
        );
        assert!(entry_target(t, Path::new("item/../../etc")).is_err());
    }

    #[test]
    fn a_tree_round_trips_with_modes() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("boxlite-archive-{}", std::process::id()));
        let src = base.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), b"data").unwrap();
        std::fs::set_permissions(src.join("sub/f"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("link")).unwrap();
        let bytes = pack_item(Vec::new(), &src, OsStr::new("src")).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        archive.set_preserve_permissions(true);
        unpack_item(&mut archive, &base.join("out")).unwrap();
        assert_eq!(std::fs::read(base.join("out/sub/f")).unwrap(), b"data");
        let mode = std::fs::metadata(base.join("out/sub/f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            std::fs::read_link(base.join("out/link")).unwrap(),
            Path::new("sub/f")
        );
        std::fs::remove_dir_all(base).unwrap();
    }
}
