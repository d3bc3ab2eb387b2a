//! Snapshots: a box's whole state (memory, devices and disk) saved to `snapshots/<id>/` under
//! the home and recorded in `db/snapshots.db`, from which new boxes are restored.
//!
//! A snapshot's directory holds `state` (the VMM's device and memory state, written by a QEMU
//! migration to a file), `disk.qcow2` (the box's disk as it was: a qcow2 overlay on the image's
//! base disk) and `snapshot.json` (its [`SnapshotInfo`], also its row in the database).
//!
//! Invariant: a snapshot is never executed unless its state file's sha256 matches the recorded
//! checksum and the kernel, agent and QEMU it was taken with are the ones running now
//! ([`SnapshotInfo::check_restorable`]); anything else is refused with the reason.
//! `LiteBox::snapshot` takes them (`litebox/snapshot.rs`); `LiteBox::start` restores them.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::image::PreparedImage;
use crate::options::BoxOptions;

/// The name of the state file in a snapshot's directory.
pub const STATE_FILE: &str = "state";
/// The name of the guest memory file in a snapshot's directory: the guest's RAM as one
/// sparse file, each page at its guest-physical offset, which restored VMs map copy-on-write
/// (the state file then holds the devices' state and no RAM).
pub const MEMORY_FILE: &str = "memory";
/// The name of the frozen disk in a snapshot's directory.
pub const DISK_FILE: &str = "disk.qcow2";
/// The name of the metadata file in a snapshot's directory.
pub const METADATA_FILE: &str = "snapshot.json";

/// What a snapshot depends on: restoring it with any other is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// sha256 of the guest kernel image (first 16 hex digits) and its release.
    pub kernel: String,
    /// sha256 of the initramfs holding the guest agent (first 16 hex digits).
    pub agent: String,
    /// The VMM (`qemu-system-*` version).
    pub qemu: String,
}

impl Versions {
    /// The first difference between `self` (recorded) and `now`, as a sentence.
    pub fn mismatch(&self, now: &Versions) -> Option<String> {
        [
            ("guest kernel", &self.kernel, &now.kernel),
            ("guest agent", &self.agent, &now.agent),
            ("QEMU", &self.qemu, &now.qemu),
        ]
        .into_iter()
        .find(|(_, then, now)| then != now)
        .map(|(what, then, now)| {
            format!("it was taken with {what} {then}, and this runtime has {now}")
        })
    }
}

/// One snapshot, as recorded (serialised to the bindings as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub name: String,
    /// The box it was taken of.
    pub source_box: String,
    pub image: String,
    pub image_digest: String,
    pub versions: Versions,
    /// The guest kernel's release, as its agent reported it.
    pub kernel_release: String,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Whether the VM had a network device (its machine shape depends on it).
    pub network: bool,
    /// Bytes the snapshot takes on disk (allocated blocks of its files).
    pub size_bytes: u64,
    pub created_at: String,
    /// sha256 of the state file ([`state_checksum`]), checked before any restore.
    pub checksum: String,
    /// How long the box was paused while its state was saved, in milliseconds.
    pub took_ms: u64,
    pub dir: PathBuf,
    /// The source box's options and image: a restored box gets the same VM shape.
    pub options: BoxOptions,
    pub prepared_image: PreparedImage,
    /// The id of the box `fork()` took this snapshot of: the forks' disks build on it, and it
    /// is removed once none of them remains (see `Runtime::fork`). `None` for a user's snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_of: Option<String>,
    /// sha256 of the guest memory file ([`MEMORY_FILE`]) when the guest's RAM is kept there,
    /// shared by the VMs restored from it; `None` when the state file holds the RAM (a
    /// hibernated box's state, or a snapshot whose memory file could not be made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_checksum: Option<String>,
    /// The key of a cached post-boot snapshot (see `runtime/boot_cache.rs`), taken by
    /// `create()` of a box right after it booted; such snapshots are not listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_key: Option<String>,
}

impl SnapshotInfo {
    pub fn state_file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn disk_file(&self) -> PathBuf {
        self.dir.join(DISK_FILE)
    }

    /// The file restored VMs map their RAM from, when the snapshot has one.
    pub fn memory_file(&self) -> Option<PathBuf> {
        self.memory_checksum
            .as_ref()
            .map(|_| self.dir.join(MEMORY_FILE))
    }

    /// The migration capabilities its state file was written with, which its restore sets.
    pub fn migration_capabilities(&self) -> &'static [(&'static str, bool)] {
        if self.memory_checksum.is_some() {
            DEVICE_STATE_CAPABILITIES
        } else {
            FULL_STATE_CAPABILITIES
        }
    }

    /// Refuses a snapshot that must not run: taken with another kernel, agent or QEMU than
    /// `now`, or whose state file does not hash to its checksum (truncated, tampered with).
    pub fn check_restorable(&self, now: &Versions) -> Result<()> {
        if let Some(why) = self.versions.mismatch(now) {
            return Err(Error::Snapshot(format!(
                "snapshot {:?} cannot be restored: {why}. Take a new snapshot with this runtime",
                self.name
            )));
        }
        let memory = self.memory_file().zip(self.memory_checksum.as_ref());
        for (file, expected, what) in std::iter::once((self.state_file(), &self.checksum, "state"))
            .chain(memory.map(|(file, sum)| (file, sum, "memory")))
        {
            let actual = verified_checksum(&file, expected, STAMP_SETTLED)
                .context(|| format!("read the {what} of snapshot {:?}", self.name))?;
            if &actual != expected {
                return Err(Error::Snapshot(format!(
                    "snapshot {:?} is damaged: its {what} file {} has sha256 {actual}, not the {expected} recorded when it was taken (truncated or modified); it was not run. Remove it with `runtime.snapshots.remove({:?})`",
                    self.name,
                    file.display(),
                    self.name
                )));
            }
        }
        Ok(())
    }
}

/// The migration capabilities of a state file holding the guest's RAM: `mapped-ram` (one
/// sparse file, each page at its own offset, written and read in place).
pub(crate) const FULL_STATE_CAPABILITIES: &[(&str, bool)] =
    &[("x-ignore-shared", false), ("mapped-ram", true)];
/// The migration capabilities of a state file beside a guest memory file: RAM in a shared
/// file is left out of the stream (`x-ignore-shared`, which `mapped-ram` cannot go with).
pub(crate) const DEVICE_STATE_CAPABILITIES: &[(&str, bool)] =
    &[("mapped-ram", false), ("x-ignore-shared", true)];

/// How old a state file's last write must be for a matching checksum to be remembered: a
/// later write then gets a later modification time (the kernel stamps writes with a clock of
/// a few milliseconds' resolution), so it cannot pass for the file checked.
const STAMP_SETTLED: Duration = Duration::from_millis(100);

/// What identifies a file's contents without reading them: the file (device, inode), its
/// length and its modification time (which every write and truncation updates). Not the
/// change time: a restore links the state file into the VMM's jail, which changes that. (A
/// writer that sets the modification time back on purpose could as well rewrite the
/// recorded checksum beside it: the checksum guards against damage, not against the home's
/// owner.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

/// State files whose checksum matched, as they were then (this process's): restoring one
/// snapshot many times (a fork's) reads its state once.
fn verified() -> &'static Mutex<HashMap<PathBuf, (Stamp, String)>> {
    static VERIFIED: OnceLock<Mutex<HashMap<PathBuf, (Stamp, String)>>> = OnceLock::new();
    VERIFIED.get_or_init(Default::default)
}

/// The [`state_checksum`] of `path`: `expected` without reading the file when it matched
/// before and the file has not changed since; otherwise computed, and remembered when it is
/// `expected` and the file's last write is at least `settled` old.
fn verified_checksum(path: &Path, expected: &str, settled: Duration) -> std::io::Result<String> {
    let before = stamp(path)?;
    if let Some((stamp, checksum)) = verified().lock().expect("verified lock").get(path) {
        if *stamp == before && checksum == expected {
            return Ok(checksum.clone());
        }
    }
    let actual = state_checksum(path)?;
    let changed_at = std::time::UNIX_EPOCH
        + Duration::new(before.mtime.max(0) as u64, before.mtime_nsec.max(0) as u32);
    let is_settled = std::time::SystemTime::now()
        .duration_since(changed_at)
        .is_ok_and(|age| age >= settled);
    if actual == expected && is_settled && stamp(path)? == before {
        let mut cache = verified().lock().expect("verified lock");
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(path.to_owned(), (before, actual.clone()));
    }
    Ok(actual)
}

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The checksum of a state file: sha256 over its length and each of its data extents (offset,
/// length, bytes), lower-case hex. A state file is sparse (guest memory the guest never
/// touched is a hole), so this reads only what is written; changing, adding or removing any
/// byte, or truncating the file, changes it.
pub fn state_checksum(path: &Path) -> std::io::Result<String> {
    use std::io::{Seek, SeekFrom};
    use std::os::fd::AsRawFd;
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut hasher = Sha256::new();
    hasher.update(len.to_le_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let mut at: u64 = 0;
    while at < len {
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(file.as_raw_fd(), at as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // Only a hole is left.
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(file.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (start, end) = (data as u64, (hole as u64).min(len));
        hasher.update(start.to_le_bytes());
        hasher.update((end - start).to_le_bytes());
        file.seek(SeekFrom::Start(start))?;
        let mut left = end - start;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            file.read_exact(&mut buf[..want])?;
            hasher.update(&buf[..want]);
            left -= want as u64;
        }
        at = end;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The first 16 hex digits of a file's sha256, cached by path, size and modification time
/// (the guest files are hashed once per process).
pub fn short_hash(path: &Path) -> std::io::Result<String> {
    type Key = (PathBuf, u64, std::time::SystemTime);
    static CACHE: OnceLock<Mutex<Vec<(Key, String)>>> = OnceLock::new();
    let meta = std::fs::metadata(path)?;
    let key = (path.to_owned(), meta.len(), meta.modified()?);
    let cache = CACHE.get_or_init(Default::default);
    if let Some((_, hash)) = cache
        .lock()
        .expect("hash cache")
        .iter()
        .find(|(k, _)| *k == key)
    {
        return Ok(hash.clone());
    }
    let mut hash = sha256_file(path)?;
    hash.truncate(16);
    cache.lock().expect("hash cache").push((key, hash.clone()));
    Ok(hash)
}

/// Bytes allocated on disk for the files directly in `dir` (sparse files count what they use).
pub fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

/// The error for a snapshot name or id that does not exist.
pub fn not_found(name_or_id: &str) -> Error {
    Error::SnapshotNotFound(name_or_id.to_owned())
}

/// The snapshots of a home: their records and the directory holding their files.
pub struct SnapshotStore {
    pub db: SnapshotDb,
    /// `snapshots/` under the home; each snapshot's files are in `<root>/<id>/`.
    pub root: PathBuf,
}

impl SnapshotStore {
    pub fn open(home: &Path) -> Result<SnapshotStore> {
        let root = home.join("snapshots");
        for dir in [&root, &home.join("db")] {
            std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
        }
        Ok(SnapshotStore {
            db: SnapshotDb::open(home.join("db").join("snapshots.db"))?,
            root,
        })
    }
}

/// `db/snapshots.db`: one row per snapshot of the home.
pub struct SnapshotDb {
    path: PathBuf,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS snapshots (
                    id TEXT PRIMARY KEY,
                    name TEXT UNIQUE NOT NULL,
                    source_box TEXT NOT NULL,
                    info TEXT NOT NULL,
                    created_at TEXT NOT NULL
                );";

fn db_error(path: &Path, e: rusqlite::Error) -> Error {
    crate::sqlite::error("snapshot records", path, e)
}

impl SnapshotDb {
    pub fn open(path: PathBuf) -> Result<SnapshotDb> {
        crate::sqlite::create(&path, SCHEMA).map_err(|e| db_error(&path, e))?;
        Ok(SnapshotDb { path })
    }

    fn connect(&self) -> Result<rusqlite::Connection> {
        crate::sqlite::connect(&self.path).map_err(|e| db_error(&self.path, e))
    }

    /// Records a new snapshot; a name already taken is a conflict.
    pub fn insert(&self, info: &SnapshotInfo) -> Result<()> {
        self.connect()?
            .execute(
                "INSERT INTO snapshots (id, name, source_box, info, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    info.id,
                    info.name,
                    info.source_box,
                    serde_json::to_string(info).expect("snapshot info serialises"),
                    info.created_at
                ],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Error::Conflict(format!(
                        "a snapshot named {:?} already exists: pick another name, or remove it with `runtime.snapshots.remove({:?})`",
                        info.name, info.name
                    ))
                }
                other => db_error(&self.path, other),
            })?;
        Ok(())
    }

    fn parse(&self, text: String) -> Result<SnapshotInfo> {
        serde_json::from_str(&text).map_err(|e| {
            Error::Snapshot(format!(
                "a snapshot record in {} is unreadable: {e}",
                self.path.display()
            ))
        })
    }

    /// Every snapshot, oldest first.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare("SELECT info FROM snapshots ORDER BY created_at, id")
            .map_err(|e| db_error(&self.path, e))?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(|e| db_error(&self.path, e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| db_error(&self.path, e))?;
        rows.into_iter().map(|t| self.parse(t)).collect()
    }

    /// The snapshot with this id, or else this name.
    pub fn find(&self, name_or_id: &str) -> Result<Option<SnapshotInfo>> {
        let text: Option<String> = self
            .connect()?
            .query_row(
                "SELECT info FROM snapshots WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1",
                params![name_or_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| db_error(&self.path, e))?;
        text.map(|t| self.parse(t)).transpose()
    }

    /// The snapshot with this id or name, or an error naming `runtime.snapshots.list()`.
    pub fn get(&self, name_or_id: &str) -> Result<SnapshotInfo> {
        self.find(name_or_id)?.ok_or_else(|| not_found(name_or_id))
    }

    /// Replaces a snapshot's recorded info (same id).
    pub fn update(&self, info: &SnapshotInfo) -> Result<()> {
        self.connect()?
            .execute(
                "UPDATE snapshots SET info = ?2 WHERE id = ?1",
                params![
                    info.id,
                    serde_json::to_string(info).expect("snapshot info serialises")
                ],
            )
            .map_err(|e| db_error(&self.path, e))?;
        Ok(())
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        self.connect()?
            .execute("DELETE FROM snapshots WHERE id = ?1", params![id])
            .map_err(|e| db_error(&self.path, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions() -> Versions {
        Versions {
            kernel: "k1".into(),
            agent: "a1".into(),
            qemu: "10.0.2".into(),
        }
    }

    fn info(dir: &Path, name: &str) -> SnapshotInfo {
        SnapshotInfo {
            id: format!("id-{name}"),
            name: name.into(),
            source_box: "box".into(),
            image: "busybox".into(),
            image_digest: "sha256:0".into(),
            versions: versions(),
            kernel_release: "6.1".into(),
            cpus: 1,
            memory_mib: 512,
            network: false,
            size_bytes: 0,
            created_at: "2026-01-01T00:00:00Z".into(),
            checksum: String::new(),
            took_ms: 0,
            dir: dir.to_owned(),
            options: BoxOptions::default(),
            prepared_image: PreparedImage {
                reference: "busybox".into(),
                manifest_digest: "sha256:0".into(),
                base_disk: dir.join("base.raw"),
                env: Vec::new(),
                working_dir: None,
                user: None,
                entrypoint: Vec::new(),
                cmd: Vec::new(),
            },
            fork_of: None,
            memory_checksum: None,
            boot_key: None,
        }
    }

    #[test]
    fn a_version_mismatch_names_what_differs() {
        let mut now = versions();
        assert_eq!(versions().mismatch(&now), None);
        now.qemu = "11.0.0".into();
        assert_eq!(
            versions().mismatch(&now).unwrap(),
            "it was taken with QEMU 10.0.2, and this runtime has 11.0.0"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = info(dir.path(), "s").check_restorable(&now).unwrap_err();
        assert!(matches!(err, Error::Snapshot(_)), "{err:?}");
        assert!(err.to_string().contains("QEMU 10.0.2"), "{err}");
    }

    #[test]
    fn a_settled_state_file_is_read_once_and_a_change_is_still_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        std::fs::write(&path, b"saved state").unwrap();
        let good = state_checksum(&path).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let settled = Duration::from_millis(30);
        assert_eq!(verified_checksum(&path, &good, settled).unwrap(), good);
        assert!(verified().lock().unwrap().contains_key(&path));
        std::thread::sleep(Duration::from_millis(60));
        // Linked and unlinked (as a restore into a jail does): still known.
        let link = dir.path().join("link");
        std::fs::hard_link(&path, &link).unwrap();
        std::fs::remove_file(&link).unwrap();
        assert_eq!(stamp(&path).unwrap(), verified().lock().unwrap()[&path].0);
        // Same length, other bytes: the modification time moved, so the file is read again.
        std::fs::write(&path, b"saved stat!").unwrap();
        assert_ne!(verified_checksum(&path, &good, settled).unwrap(), good);
        // A file changed just now is checked, but not remembered.
        let fresh = dir.path().join("fresh");
        std::fs::write(&fresh, b"x").unwrap();
        let sum = state_checksum(&fresh).unwrap();
        assert_eq!(
            verified_checksum(&fresh, &sum, Duration::from_secs(60)).unwrap(),
            sum
        );
        assert!(!verified().lock().unwrap().contains_key(&fresh));
    }

    #[test]
    fn a_modified_state_file_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut snap = info(dir.path(), "s");
        std::fs::write(snap.state_file(), b"saved state").unwrap();
        snap.checksum = state_checksum(&snap.state_file()).unwrap();
        snap.check_restorable(&versions()).unwrap();
        std::fs::write(snap.state_file(), b"saved stat").unwrap();
        let err = snap.check_restorable(&versions()).unwrap_err().to_string();
        assert!(err.contains("is damaged"), "{err}");
        // A sparse file: its data extents and its length count, its holes read as nothing.
        let sparse = dir.path().join("sparse");
        let f = std::fs::File::create(&sparse).unwrap();
        f.set_len(1 << 24).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"page", 1 << 20).unwrap();
        let before = state_checksum(&sparse).unwrap();
        f.write_all_at(b"Page", 1 << 20).unwrap();
        assert_ne!(state_checksum(&sparse).unwrap(), before);
        f.write_all_at(b"page", 1 << 20).unwrap();
        assert_eq!(state_checksum(&sparse).unwrap(), before);
        f.set_len((1 << 24) - 1).unwrap();
        assert_ne!(state_checksum(&sparse).unwrap(), before);
        assert!(err.contains("runtime.snapshots.remove(\"s\")"), "{err}");
    }

    #[test]
    fn the_db_finds_by_id_or_name_and_refuses_a_second_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = SnapshotDb::open(dir.path().join("snapshots.db")).unwrap();
        db.insert(&info(dir.path(), "one")).unwrap();
        assert_eq!(db.get("one").unwrap().id, "id-one");
        assert_eq!(db.get("id-one").unwrap().name, "one");
        let err = db.insert(&info(dir.path(), "one")).unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        let err = db.get("two").unwrap_err().to_string();
        assert!(err.contains("runtime.snapshots.list()"), "{err}");
        db.remove("id-one").unwrap();
        assert!(db.list().unwrap().is_empty());
    }
}
