//! Building an image's read-only base disk: an ext4 file system made by `mke2fs -d` from the
//! staging tree, then corrected by one `debugfs` command file: owners, groups and modes as the
//! image states them, plus device nodes and fifos. No root is needed on the host.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::image::unpack::{Kind, Manifest, Meta};

/// Free space a new box sees in its root file system on top of the image's content.
/// The base file is sparse, so unused space costs nothing on the host.
pub const WRITABLE_HEADROOM_BYTES: u64 = 4 << 30;

/// Finds an e2fsprogs tool: Debian keeps them in /sbin, which is not on a normal user's PATH.
pub fn e2fs_tool(name: &str) -> Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Disk(format!("`{name}` not found: install e2fsprogs (Debian/Ubuntu: `sudo apt-get install e2fsprogs`)"))
        })
}

fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(m) = entry.metadata() else { continue };
            // Round every file up to a 4 KiB block, plus an inode's worth for each entry.
            total += m.len().div_ceil(4096) * 4096 + 256;
            if m.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

/// Longest command line debugfs reads from a command file: it reads lines with `fgets` into
/// an 8,192-byte buffer, so a longer line is split and its tail runs as a command of its own
/// (measured with e2fsprogs 1.47.0: `stat /<8,184 a>mkdir /x` runs `kdir /x`).
pub const DEBUGFS_MAX_LINE: usize = 8190;

/// Quotes a path for debugfs's command parser (double quotes, `""` for a literal quote).
/// Names debugfs could misread are refused: control characters (a newline ends a command,
/// a carriage return cuts it), components over 255 bytes, paths over 4,095 bytes.
fn quote(path: &Path) -> Result<String> {
    use crate::image::unpack::{MAX_NAME_BYTES, MAX_PATH_BYTES};
    let s = path
        .to_str()
        .ok_or_else(|| Error::Disk(format!("path {} is not UTF-8", path.display())))?;
    if s.chars().any(|c| c.is_control()) {
        return Err(Error::Disk(format!(
            "path {s:?} contains a control character, which debugfs cannot express safely"
        )));
    }
    if s.len() > MAX_PATH_BYTES || s.split('/').any(|c| c.len() > MAX_NAME_BYTES) {
        return Err(Error::Disk(format!(
            "path {:?}... is over {MAX_PATH_BYTES} bytes or has a name over {MAX_NAME_BYTES} bytes",
            s.chars().take(64).collect::<String>()
        )));
    }
    Ok(format!("\"/{}\"", s.replace('"', "\"\"")))
}

/// Refuses a script any of whose lines debugfs would split (see [`DEBUGFS_MAX_LINE`]).
fn check_lines(script: &str) -> Result<()> {
    match script.lines().find(|l| l.len() > DEBUGFS_MAX_LINE) {
        Some(line) => Err(Error::Disk(format!(
            "a debugfs command for {:?}... is {} bytes long, over debugfs's line limit of {DEBUGFS_MAX_LINE}; the image's path names are too long",
            line.chars().take(64).collect::<String>(),
            line.len()
        ))),
        None => Ok(()),
    }
}

/// The debugfs commands that make the file system match the manifest. Entries whose staged
/// copy already has the intended owner and mode (what mke2fs copies) need no command.
pub fn fixup_commands(staging: &Path, manifest: &Manifest) -> Result<String> {
    let mut script = String::new();
    // mke2fs adds /lost+found; an image that has none must not show one.
    if !manifest.contains_key(Path::new("lost+found")) {
        script.push_str("rmdir /lost+found\n");
    }
    for (rel, meta) in manifest {
        let Meta {
            kind,
            mode,
            uid,
            gid,
        } = *meta;
        let quoted = quote(rel)?;
        if kind.is_special() {
            let parent = rel.parent().unwrap_or(Path::new(""));
            let name = rel
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::Disk(format!("bad name {}", rel.display())))?;
            let node = match kind {
                Kind::Fifo => "p".to_owned(),
                Kind::CharDevice { major, minor } => format!("c {major} {minor}"),
                Kind::BlockDevice { major, minor } => format!("b {major} {minor}"),
                _ => unreachable!(),
            };
            let _ = writeln!(
                script,
                "cd {}\nmknod \"{}\" {node}\ncd /",
                quote(parent)?,
                name.replace('"', "\"\"")
            );
        } else if let Ok(staged) = fs::symlink_metadata(staging.join(rel)) {
            if staged.uid() == uid && staged.gid() == gid && staged.mode() & 0o7777 == mode {
                continue;
            }
        }
        let full_mode = kind.type_bits() | mode;
        let _ = writeln!(
            script,
            "sif {quoted} mode 0{full_mode:o}\nsif {quoted} uid {uid}\nsif {quoted} gid {gid}"
        );
    }
    check_lines(&script)?;
    Ok(script)
}

/// Builds `output` (a sparse raw ext4 image) from the staging tree and its manifest, with
/// `headroom` bytes free for the box to write (default [`WRITABLE_HEADROOM_BYTES`]).
pub fn build_base_disk(
    staging: &Path,
    manifest: &Manifest,
    output: &Path,
    headroom: Option<u64>,
) -> Result<()> {
    let headroom = headroom.unwrap_or(WRITABLE_HEADROOM_BYTES);
    let size = (tree_bytes(staging) * 5 / 4 + headroom).div_ceil(1 << 20) << 20;
    let file = fs::File::create(output)
        .map_err(|e| Error::Disk(format!("create {}: {e}", output.display())))?;
    file.set_len(size)
        .map_err(|e| Error::Disk(format!("size {}: {e}", output.display())))?;
    drop(file);

    let mke2fs = e2fs_tool("mke2fs")?;
    let out = Command::new(&mke2fs)
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-m",
            "0",
            "-L",
            "boxlite-root",
        ])
        .args([
            "-E",
            "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
        ])
        .arg("-d")
        .arg(staging)
        .arg(output)
        .output()
        .map_err(|e| Error::Disk(format!("run {}: {e}", mke2fs.display())))?;
    if !out.status.success() {
        return Err(Error::Disk(format!(
            "mke2fs failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }

    let commands = fixup_commands(staging, manifest)?;
    {
        let script = output.with_extension("debugfs");
        fs::write(&script, commands)
            .map_err(|e| Error::Disk(format!("write {}: {e}", script.display())))?;
        let debugfs = e2fs_tool("debugfs")?;
        let out = Command::new(&debugfs)
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(output)
            .output()
            .map_err(|e| Error::Disk(format!("run {}: {e}", debugfs.display())))?;
        let _ = fs::remove_file(&script);
        // debugfs exits 0 even when a command fails; every line it prints to stderr other
        // than its banner is a failed command.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
            .collect();
        if !out.status.success() || !errors.is_empty() {
            return Err(Error::Disk(format!(
                "debugfs could not set ownership and modes: {}",
                errors.join("; ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::unpack::Unpacker;

    fn debugfs_stat(image: &Path, path: &str) -> String {
        let out = Command::new(e2fs_tool("debugfs").unwrap())
            .args(["-R", &format!("stat \"{path}\"")])
            .arg(image)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn no_script_line_exceeds_what_debugfs_reads_whole() {
        // 16 names of 255 quotes: a legal 4,095-byte path whose quoting doubles it, so its
        // `sif` line would be split by debugfs and its tail run as a command.
        let path = PathBuf::from(vec!["\"".repeat(255); 16].join("/"));
        let mut manifest = Manifest::new();
        manifest.insert(
            path,
            Meta {
                kind: Kind::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        );
        let err = fixup_commands(Path::new("/nonexistent"), &manifest)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line limit"), "{err}");
        let short: Manifest = [(
            PathBuf::from("ok"),
            Meta {
                kind: Kind::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        )]
        .into();
        let script = fixup_commands(Path::new("/nonexistent"), &short).unwrap();
        assert!(script.lines().all(|l| l.len() <= DEBUGFS_MAX_LINE));
    }

    #[test]
    fn owners_modes_and_devices_reach_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let mut unpacker = Unpacker::new(&root).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, mode, uid) in [
            ("etc/", tar::EntryType::Directory, 0o755, 0),
            ("etc/shadow", tar::EntryType::Regular, 0o640, 0),
            ("home/app/", tar::EntryType::Directory, 0o700, 1000),
            ("usr/bin/su", tar::EntryType::Regular, 0o4755, 0),
            ("dev/null", tar::EntryType::Char, 0o666, 0),
            (
                "with \"quote\" and space",
                tar::EntryType::Regular,
                0o600,
                7,
            ),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_size(0);
            if kind == tar::EntryType::Char {
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
            }
            b.append_data(&mut h, path, &[][..]).unwrap();
        }
        unpacker.apply_layer(&b.into_inner().unwrap()[..]).unwrap();
        let manifest = unpacker.into_manifest();
        let image = dir.path().join("base.ext4");
        build_base_disk(&root, &manifest, &image, None).unwrap();

        let stat = debugfs_stat(&image, "/home/app");
        assert!(
            stat.contains("User:  1000")
                && stat.contains("Group:  1000")
                && stat.contains("Mode:  0700"),
            "{stat}"
        );
        let stat = debugfs_stat(&image, "/usr/bin/su");
        assert!(stat.contains("Mode:  04755"), "{stat}");
        let stat = debugfs_stat(&image, "/dev/null");
        assert!(
            stat.contains("Type: character special") && stat.contains("Mode:  0666"),
            "{stat}"
        );
        let stat = debugfs_stat(&image, "/with \"\"quote\"\" and space");
        assert!(
            stat.contains("User:     7") && stat.contains("Mode:  0600"),
            "{stat}"
        );
        assert!(
            !debugfs_stat(&image, "/lost+found").contains("Type: directory"),
            "mke2fs's lost+found is removed"
        );
        let fsck = Command::new(e2fs_tool("e2fsck").unwrap())
            .arg("-fn")
            .arg(&image)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }
}
