//! The home directory itself: where it is (`BOXLITE_HOME`, else `~/.boxlite`) and creating it
//! private.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// `BOXLITE_HOME`, else `~/.boxlite`.
pub fn default_home() -> PathBuf {
    if let Some(home) = std::env::var_os("BOXLITE_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join(".boxlite")
}

/// Creates `home` private (0700: boxes' disks, logs and sockets are the user's alone); a home
/// that exists already is left as its owner made it, with a warning if others may enter it.
pub(super) fn create_home(home: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if let Some(parent) = home.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).context(|| format!("create {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(home) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(home).context(|| format!("stat {}", home.display()))?;
            if !meta.is_dir() {
                return Err(Error::InvalidOption(format!(
                    "BOXLITE_HOME {} is not a directory: point it at a directory (or a path to create)",
                    home.display()
                )));
            }
            if meta.mode() & 0o077 != 0 {
                tracing::warn!(
                    home = %home.display(),
                    mode = format!("{:o}", meta.mode() & 0o7777),
                    "BOXLITE_HOME is open to other users; `chmod 700` it to keep boxes private"
                );
            }
            Ok(())
        }
        Err(e) => Err(e).context(|| format!("create {}", home.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_home_is_private() {
        let base = tempfile::tempdir().unwrap();
        let home = base.path().join("parent").join("home");
        create_home(&home).unwrap();
        let mode = std::fs::metadata(&home).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // An existing home is accepted as it is; a file is not a home.
        create_home(&home).unwrap();
        std::fs::write(base.path().join("file"), b"").unwrap();
        let err = create_home(&base.path().join("file"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
