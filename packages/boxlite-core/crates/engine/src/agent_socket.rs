//! Where a box's agent socket lives: `boxes/<id>/agent.sock` in the (private) home, unless that
//! path is too long for a unix socket. Then the socket goes into a fresh private directory
//! (`mkdtemp`, mode 0700, under `$XDG_RUNTIME_DIR` or `/tmp`), and `boxes/<id>/agent.sock` is a
//! symlink to it, so another process of the same home finds it to reattach. A name under
//! `/tmp` that another user could guess and create first is never used, and a directory is
//! trusted only when `lstat` shows it is a real directory of ours that nobody else can enter.
//!
//! The VMM's control socket (QMP, [`qmp_socket`]) lives in the same directory as the agent's.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Unix socket paths are limited to 107 bytes; this leaves room for QEMU's own handling.
const MAX_SOCKET_PATH: usize = 100;

const SOCKET_NAME: &str = "agent.sock";

/// The name of the VMM's control socket, beside the agent's.
const QMP_SOCKET_NAME: &str = "qmp.sock";

/// The VMM's control socket of the VM whose agent socket is `agent_socket`.
pub fn qmp_socket(agent_socket: &Path) -> PathBuf {
    agent_socket.with_file_name(QMP_SOCKET_NAME)
}

/// The socket path for a VM about to launch in the box directory `dir`. Any private directory
/// of an earlier launch is removed first.
pub fn for_launch(dir: &Path) -> Result<PathBuf> {
    let preferred = dir.join(SOCKET_NAME);
    remove(dir);
    if preferred.as_os_str().len() < MAX_SOCKET_PATH {
        return Ok(preferred);
    }
    let base = private_base();
    let private = tempfile::Builder::new()
        .prefix("boxlite-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&base)
        .context(|| format!("create a private socket directory in {}", base.display()))?
        .keep();
    check_private(&private)?;
    let socket = private.join(SOCKET_NAME);
    std::os::unix::fs::symlink(&socket, &preferred)
        .context(|| format!("link {} to {}", preferred.display(), socket.display()))?;
    Ok(socket)
}

/// The socket path of the running VM of the box in `dir` (to reattach to it).
pub fn for_attach(dir: &Path) -> Result<PathBuf> {
    let preferred = dir.join(SOCKET_NAME);
    match std::fs::read_link(&preferred) {
        Ok(socket) => {
            let private = socket.parent().unwrap_or(Path::new("/"));
            check_private(private)?;
            Ok(socket)
        }
        Err(_) => Ok(preferred),
    }
}

/// Removes the private socket directory of the box in `dir`, if it has one (and the link).
pub fn remove(dir: &Path) {
    let preferred = dir.join(SOCKET_NAME);
    if let Ok(socket) = std::fs::read_link(&preferred) {
        if let Some(private) = socket.parent() {
            if check_private(private).is_ok() {
                let _ = std::fs::remove_file(&socket);
                let _ = std::fs::remove_file(qmp_socket(&socket));
                let _ = std::fs::remove_dir(private);
            }
        }
    }
    let _ = std::fs::remove_file(&preferred);
    let _ = std::fs::remove_file(qmp_socket(&preferred));
}

/// `$XDG_RUNTIME_DIR` when it is a private directory of ours with room for the socket's
/// name, else `/tmp` (sticky: nobody else can rename what we create there).
fn private_base() -> PathBuf {
    let room = MAX_SOCKET_PATH - "/boxlite-XXXXXX/".len() - SOCKET_NAME.len();
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.as_os_str().len() < room && check_private(d).is_ok())
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// Whether `dir` (not followed) is a directory owned by this user that nobody else can enter.
pub fn check_private(dir: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).context(|| format!("lstat {}", dir.display()))?;
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let problem = if !meta.file_type().is_dir() {
        Some("it is not a directory".to_owned())
    } else if meta.uid() != uid {
        Some(format!(
            "it belongs to uid {}, not to uid {uid}",
            meta.uid()
        ))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!(
            "its mode is {:o}: others may enter it",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(Error::InvalidOption(format!(
            "refusing {} as a private socket directory: {why}; remove it (a fresh one is made when the box starts)",
            dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_box_dir(base: &Path) -> PathBuf {
        base.join("x".repeat(60)).join("y".repeat(60))
    }

    #[test]
    fn a_long_box_dir_gets_a_fresh_private_directory() {
        let base = tempfile::tempdir().unwrap();
        let dir = long_box_dir(base.path());
        std::fs::create_dir_all(&dir).unwrap();
        let first = for_launch(&dir).unwrap();
        assert!(first.as_os_str().len() < MAX_SOCKET_PATH);
        let private = first.parent().unwrap();
        assert_eq!(qmp_socket(&first), private.join("qmp.sock"));
        std::fs::write(qmp_socket(&first), b"").unwrap();
        let meta = std::fs::symlink_metadata(private).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(for_attach(&dir).unwrap(), first);
        // Not predictable: the next launch gets another one, and the old one is gone.
        let second = for_launch(&dir).unwrap();
        assert_ne!(first, second);
        assert!(!private.exists());
        remove(&dir);
        assert!(!second.parent().unwrap().exists());
        // A short box directory keeps its socket inside.
        assert_eq!(
            for_launch(base.path()).unwrap(),
            base.path().join("agent.sock")
        );
    }

    #[test]
    fn a_directory_others_can_enter_or_a_symlink_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let dir = long_box_dir(base.path());
        std::fs::create_dir_all(&dir).unwrap();
        let socket = for_launch(&dir).unwrap();
        let private = socket.parent().unwrap().to_path_buf();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = for_attach(&dir).unwrap_err().to_string();
        assert!(err.contains("others may enter it"), "{err}");
        // Someone else's directory (giving it away needs root), or a symlink where the
        // directory was.
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&private, Some(65534), None).unwrap();
            let err = for_attach(&dir).unwrap_err().to_string();
            assert!(err.contains("belongs to uid 65534"), "{err}");
        }
        std::fs::remove_dir(&private).unwrap();
        std::os::unix::fs::symlink(base.path(), &private).unwrap();
        let err = for_attach(&dir).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        std::fs::remove_file(&private).unwrap();
    }
}
