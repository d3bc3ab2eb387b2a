//! Round trips, and hand-made hostile archives (the bytes a box's root may send): each checks
//! that nothing outside the destination changed. Over 500 lines on purpose: one attack per
//! test, side by side, is how a reviewer checks the list is complete.

use super::*;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

/// A scratch directory holding `dest/` (where items are unpacked) and `outside/` (host files
/// an attack aims at, with a `victim` file); removed on drop.
struct Scratch {
    base: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let base =
            std::env::temp_dir().join(format!("boxlite-archive-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("dest")).unwrap();
        std::fs::create_dir_all(base.join("outside/sub")).unwrap();
        std::fs::write(base.join("outside/victim"), b"original").unwrap();
        std::fs::write(base.join("outside/sub/.bashrc"), b"original rc").unwrap();
        Scratch { base }
    }

    fn dest(&self) -> PathBuf {
        self.base.join("dest")
    }

    fn outside(&self) -> PathBuf {
        self.base.join("outside")
    }

    fn item(&self) -> PathBuf {
        self.dest().join("item")
    }

    /// Everything under the scratch directory except `dest/` (the base's own entry shows any
    /// new name beside it).
    fn snapshot_outside(&self) -> BTreeMap<PathBuf, String> {
        let mut all = snapshot(&self.base);
        all.retain(|p, _| !p.starts_with(self.dest()));
        all
    }

    fn unpack(&self, bytes: &[u8], policy: &UnpackPolicy) -> Result<UnpackReport, UnpackError> {
        unpack_item(bytes, &self.item(), policy)
    }

    /// Files of a failed unpack that are half-written (there must be none).
    fn partials(&self) -> Vec<PathBuf> {
        snapshot(&self.dest())
            .into_keys()
            .filter(|p| p.to_string_lossy().contains(".boxlite-partial"))
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Every path below `root` (not followed) with its type, mode, size, inode and content.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let what = if meta.file_type().is_symlink() {
            format!("link {:?}", std::fs::read_link(&path).unwrap())
        } else if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
            "dir".into()
        } else if meta.is_file() {
            format!("file {:?}", std::fs::read(&path).unwrap())
        } else {
            "special".into()
        };
        out.insert(
            path,
            format!(
                "{what} mode {:o} ino {} nlink {} mtime {}",
                meta.mode(),
                meta.ino(),
                meta.nlink(),
                meta.mtime()
            ),
        );
    }
    out
}

/// One hand-made entry: raw name bytes (no checks), type, mode, link target, content, and a
/// size that may lie.
struct Raw<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    mode: u32,
    link: &'a [u8],
    data: &'a [u8],
    size: Option<u64>,
}

fn entry<'a>(name: &'a str, kind: tar::EntryType) -> Raw<'a> {
    Raw {
        name: name.as_bytes(),
        kind,
        mode: 0o644,
        link: b"",
        data: b"",
        size: None,
    }
}

fn dir(name: &str) -> Raw<'_> {
    Raw {
        mode: 0o755,
        ..entry(name, tar::EntryType::Directory)
    }
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        data,
        ..entry(name, tar::EntryType::Regular)
    }
}

fn symlink<'a>(name: &'a str, target: &'a str) -> Raw<'a> {
    Raw {
        link: target.as_bytes(),
        ..entry(name, tar::EntryType::Symlink)
    }
}

fn hardlink<'a>(name: &'a str, target: &'a str) -> Raw<'a> {
    Raw {
        link: target.as_bytes(),
        ..entry(name, tar::EntryType::Link)
    }
}

/// The archive of `entries`, headers written byte by byte (tar::Builder refuses `..` and
/// absolute names, which an attacker's writer does not).
fn archive(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..e.name.len()].copy_from_slice(e.name);
            gnu.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        header.set_entry_type(e.kind);
        header.set_mode(e.mode);
        header.set_mtime(1_600_000_000);
        header.set_size(e.size.unwrap_or(e.data.len() as u64));
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

fn confined() -> UnpackPolicy {
    UnpackPolicy::confined(64 * 1024 * 1024)
}

fn refused(result: Result<UnpackReport, UnpackError>) -> String {
    match result {
        Err(e @ UnpackError::Refused { .. }) => e.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_tree_round_trips_with_modes() {
    let s = Scratch::new("roundtrip");
    let src = s.base.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/f"), b"data").unwrap();
    std::fs::set_permissions(src.join("sub/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o500)).unwrap();
    std::os::unix::fs::symlink("sub/f", src.join("link")).unwrap();
    let bytes = pack_item(Vec::new(), &src, OsStr::new("src")).unwrap();
    let report = s.unpack(&bytes, &confined()).unwrap();
    // Reading stops at the first of the two end-of-archive blocks.
    assert_eq!(report.bytes + 512, bytes.len() as u64);
    assert_eq!(std::fs::read(s.item().join("sub/f")).unwrap(), b"data");
    let mode = |p: PathBuf| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(s.item().join("sub/f")), 0o640);
    assert_eq!(mode(s.item().join("sub")), 0o500);
    assert_eq!(
        std::fs::read_link(s.item().join("link")).unwrap(),
        Path::new("sub/f")
    );
    // Unpacking again over the first copy replaces it.
    std::fs::set_permissions(s.item().join("sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
    s.unpack(&bytes, &confined()).unwrap();
    assert_eq!(std::fs::read(s.item().join("sub/f")).unwrap(), b"data");
    std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(s.item().join("sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_sparse_file_round_trips_and_counts_its_real_size() {
    use std::io::{Seek, Write as _};
    let s = Scratch::new("sparse");
    let src = s.base.join("sparse");
    let mut f = std::fs::File::create(&src).unwrap();
    f.seek(std::io::SeekFrom::Start(8 << 20)).unwrap();
    f.write_all(b"end").unwrap();
    drop(f);
    let bytes = pack_item(Vec::new(), &src, OsStr::new("sparse")).unwrap();
    s.unpack(&bytes, &confined()).unwrap();
    assert_eq!(
        std::fs::read(s.item()).unwrap(),
        std::fs::read(&src).unwrap()
    );
    let err = s
        .unpack(&bytes, &UnpackPolicy::confined(1 << 20))
        .unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
}

#[test]
fn a_single_file_becomes_the_target() {
    let s = Scratch::new("single");
    let bytes = archive(&[file("whatever", b"content")]);
    s.unpack(&bytes, &confined()).unwrap();
    assert_eq!(std::fs::read(s.item()).unwrap(), b"content");
}

#[test]
fn a_file_is_never_written_through_a_symlink_the_archive_made() {
    let s = Scratch::new("symlink-then-file");
    let before = s.snapshot_outside();
    let outside = s.outside().join("sub");
    let bytes = archive(&[
        dir("item/"),
        symlink("item/link", outside.to_str().unwrap()),
        file("item/link/.bashrc", b"pwned"),
    ]);
    let why = refused(s.unpack(&bytes, &confined()));
    assert!(why.contains("symlink"), "{why}");
    assert_eq!(s.snapshot_outside(), before);
    assert!(std::fs::symlink_metadata(s.item().join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_symlink_to_the_parent_leads_nowhere() {
    let s = Scratch::new("symlink-to-parent");
    let before = s.snapshot_outside();
    for target in ["..", "../..", "."] {
        let bytes = archive(&[
            dir("item/"),
            symlink("item/up", target),
            file("item/up/escaped", b"pwned"),
        ]);
        refused(s.unpack(&bytes, &confined()));
        assert_eq!(s.snapshot_outside(), before, "through {target}");
    }
    assert!(!s.dest().join("escaped").exists());
    assert!(!s.item().join("escaped").exists());
}

#[test]
fn a_symlink_already_in_the_destination_is_not_followed() {
    let s = Scratch::new("existing-symlink");
    let before = s.snapshot_outside();
    std::os::unix::fs::symlink(s.outside().join("sub"), s.item()).unwrap();
    // An entry below the item, with no directory entry first: refused.
    refused(s.unpack(&archive(&[file("item/.bashrc", b"pwned")]), &confined()));
    // A file item replaces the symlink itself.
    std::os::unix::fs::symlink(s.outside().join("victim"), s.dest().join("f")).unwrap();
    unpack_item(
        &archive(&[file("f", b"mine")])[..],
        &s.dest().join("f"),
        &confined(),
    )
    .unwrap();
    assert_eq!(std::fs::read(s.dest().join("f")).unwrap(), b"mine");
    // A directory entry replaces the symlink with a directory.
    s.unpack(
        &archive(&[dir("item/"), file("item/.bashrc", b"mine")]),
        &confined(),
    )
    .unwrap();
    assert!(std::fs::symlink_metadata(s.item()).unwrap().is_dir());
    assert_eq!(std::fs::read(s.item().join(".bashrc")).unwrap(), b"mine");
    assert_eq!(s.snapshot_outside(), before);
}

#[test]
fn absolute_and_dotdot_names_are_refused() {
    let s = Scratch::new("names");
    let before = s.snapshot_outside();
    let victim = s.outside().join("victim");
    let names = [
        victim.to_str().unwrap().to_owned(),
        "/etc/boxlite-pwned".to_owned(),
        "item/../../outside/victim".to_owned(),
        "../outside/victim".to_owned(),
        "item/sub/../../x".to_owned(),
    ];
    for name in &names {
        let why = refused(s.unpack(&archive(&[file(name, b"pwned")]), &confined()));
        assert!(why.contains("not allowed"), "{why}");
        assert_eq!(s.snapshot_outside(), before, "{name}");
    }
    assert!(!Path::new("/etc/boxlite-pwned").exists());
    assert!(!s.item().exists());
}

#[test]
fn a_hard_link_to_a_host_file_is_refused() {
    let s = Scratch::new("hardlink-passwd");
    let before = s.snapshot_outside();
    let passwd = std::fs::symlink_metadata("/etc/passwd").unwrap();
    let bytes = archive(&[dir("item/"), hardlink("item/pw", "/etc/passwd")]);
    let why = refused(s.unpack(&bytes, &confined()));
    assert!(why.contains("hard link"), "{why}");
    let after = std::fs::symlink_metadata("/etc/passwd").unwrap();
    assert_eq!(
        (passwd.ino(), passwd.nlink(), passwd.mtime()),
        (after.ino(), after.nlink(), after.mtime())
    );
    assert!(!s.item().join("pw").exists());
    // The same with a relative name that reaches the host file through `..`, then a file
    // written over the link: the link is refused before the file comes.
    let victim = s.outside().join("victim");
    for target in [victim.to_str().unwrap(), "item/../../outside/victim"] {
        let bytes = archive(&[
            dir("item/"),
            hardlink("item/v", target),
            file("item/v", b"pwned"),
        ]);
        refused(s.unpack(&bytes, &confined()));
        assert_eq!(s.snapshot_outside(), before, "{target}");
    }
    // Nor to a file that was in the destination before this copy.
    std::fs::write(s.item().join("old"), b"old").unwrap();
    refused(s.unpack(
        &archive(&[dir("item/"), hardlink("item/new", "item/old")]),
        &confined(),
    ));
}

#[test]
fn a_hard_link_to_a_file_of_the_same_copy_works() {
    let s = Scratch::new("hardlink-ok");
    let bytes = archive(&[
        dir("item/"),
        file("item/a", b"shared"),
        hardlink("item/b", "item/a"),
        hardlink("item/a", "item/a"),
    ]);
    s.unpack(&bytes, &confined()).unwrap();
    let (a, b) = (
        std::fs::metadata(s.item().join("a")).unwrap(),
        std::fs::metadata(s.item().join("b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert!(s.partials().is_empty());
}

#[test]
fn device_nodes_and_fifos_are_skipped() {
    let s = Scratch::new("special");
    let bytes = archive(&[
        dir("item/"),
        entry("item/null", tar::EntryType::Char),
        entry("item/sda", tar::EntryType::Block),
        entry("item/pipe", tar::EntryType::Fifo),
        file("item/ok", b"ok"),
    ]);
    let report = s.unpack(&bytes, &confined()).unwrap();
    assert_eq!(
        report.skipped,
        [
            "item/null (character device)",
            "item/sda (block device)",
            "item/pipe (fifo)"
        ]
    );
    let names: Vec<_> = std::fs::read_dir(s.item())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["ok"]);
}

#[test]
fn setuid_setgid_and_sticky_bits_are_dropped() {
    let s = Scratch::new("setuid");
    let bytes = archive(&[
        Raw {
            mode: 0o3777,
            ..dir("item/")
        },
        Raw {
            mode: 0o4755,
            ..file("item/su", b"#!/bin/sh\n")
        },
        Raw {
            mode: 0o2711,
            ..file("item/sg", b"x")
        },
    ]);
    s.unpack(&bytes, &confined()).unwrap();
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(s.item().join("su")), 0o755);
    assert_eq!(mode(s.item().join("sg")), 0o711);
    assert_eq!(mode(s.item()), 0o777);
    // In the box (copy_in) they are kept.
    let s2 = Scratch::new("setuid-trusted");
    s2.unpack(&bytes, &UnpackPolicy::trusted()).unwrap();
    assert_eq!(mode(s2.item().join("su")), 0o4755);
}

#[test]
fn a_header_claiming_a_tebibyte_fails_before_writing() {
    let s = Scratch::new("tebibyte");
    let huge = Raw {
        size: Some(1 << 40),
        ..file("item/big", b"")
    };
    let bytes = archive(&[dir("item/"), huge]);
    match s.unpack(&bytes, &confined()) {
        Err(UnpackError::TooLarge { entry, needed, .. }) => {
            assert_eq!((entry.as_str(), needed), ("item/big", 1 << 40));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(!s.item().join("big").exists());
    // Under a limit it fits, the destination's free space stops it.
    let bigger = Raw {
        size: Some(1 << 60),
        ..file("item/big", b"")
    };
    let bytes = archive(&[dir("item/"), bigger]);
    match s.unpack(&bytes, &UnpackPolicy::confined(u64::MAX)) {
        Err(UnpackError::NoSpace { needed, .. }) => assert_eq!(needed, 1 << 60),
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(!s.item().join("big").exists());
    assert!(s.partials().is_empty());
}

#[test]
fn the_size_limit_counts_contents_and_headers_and_leaves_no_partial_file() {
    let s = Scratch::new("limit");
    let data = vec![7u8; 4096];
    let bytes = archive(&[dir("item/"), file("item/a", &data), file("item/b", &data)]);
    // Room for the first file and its header, not for the second.
    let err = s
        .unpack(&bytes, &UnpackPolicy::confined(512 * 3 + 4096 + 100))
        .unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("item/b"), "{err}");
    assert_eq!(std::fs::read(s.item().join("a")).unwrap(), data);
    assert!(!s.item().join("b").exists());
    // Many empty entries cost their headers.
    let names: Vec<String> = (0..100).map(|i| format!("item/e{i}")).collect();
    let mut entries = vec![dir("item/")];
    entries.extend(names.iter().map(|n| file(n, b"")));
    let err = s
        .unpack(&archive(&entries), &UnpackPolicy::confined(512 * 50))
        .unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
}

#[test]
fn a_truncated_file_is_not_left_under_its_name() {
    let s = Scratch::new("truncated");
    let mut bytes = archive(&[
        dir("item/"),
        Raw {
            size: Some(100_000),
            ..file("item/cut", &[1u8; 1000])
        },
    ]);
    bytes.truncate(512 * 2 + 1000);
    let err = s.unpack(&bytes, &confined()).unwrap_err();
    assert!(matches!(err, UnpackError::Io { .. }), "{err}");
    assert!(!s.item().join("cut").exists());
    assert!(s.partials().is_empty());
    // An earlier complete copy of the file stays as it was.
    std::fs::write(s.item().join("cut"), b"complete").unwrap();
    s.unpack(&bytes, &confined()).unwrap_err();
    assert_eq!(std::fs::read(s.item().join("cut")).unwrap(), b"complete");
}

#[test]
fn same_name_different_types() {
    let s = Scratch::new("same-name");
    let before = s.snapshot_outside();
    let outside = s.outside().join("sub");
    let outside = outside.to_str().unwrap();
    // A file, then a directory of the same name, then a file in it.
    s.unpack(
        &archive(&[
            dir("item/"),
            file("item/a", b"file"),
            dir("item/a/"),
            file("item/a/f", b"inner"),
        ]),
        &confined(),
    )
    .unwrap();
    assert_eq!(std::fs::read(s.item().join("a/f")).unwrap(), b"inner");
    // A symlink, then a directory of the same name (a real one replaces it), then a file.
    s.unpack(
        &archive(&[
            dir("item/"),
            symlink("item/d", outside),
            dir("item/d/"),
            file("item/d/.bashrc", b"inner"),
        ]),
        &confined(),
    )
    .unwrap();
    assert!(std::fs::symlink_metadata(s.item().join("d"))
        .unwrap()
        .is_dir());
    // A directory, then a symlink of the same name (a directory is never replaced).
    for replacement in [
        symlink("item/c", outside),
        file("item/c", b"file"),
        hardlink("item/c", "item/a/f"),
    ] {
        refused(s.unpack(
            &archive(&[
                dir("item/"),
                dir("item/a/"),
                file("item/a/f", b"inner"),
                dir("item/c/"),
                replacement,
                file("item/c/.bashrc", b"pwned"),
            ]),
            &confined(),
        ));
        assert!(std::fs::symlink_metadata(s.item().join("c"))
            .unwrap()
            .is_dir());
    }
    assert_eq!(s.snapshot_outside(), before);
    assert!(s.partials().is_empty());
}

#[test]
fn oversized_headers_are_refused_without_reading_them_into_memory() {
    let s = Scratch::new("long-name");
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_size(1 << 40);
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    bytes.resize(bytes.len() + 4 * 1024 * 1024, b'a');
    let err = s.unpack(&bytes, &confined()).unwrap_err();
    assert!(err.to_string().contains("headers"), "{err}");
}

#[test]
fn long_names_within_the_limit_work() {
    let s = Scratch::new("long-ok");
    let src = s.base.join("src");
    let deep = src.join("a".repeat(200)).join("b".repeat(200));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("f"), b"deep").unwrap();
    let bytes = pack_item(Vec::new(), &src, OsStr::new("src")).unwrap();
    s.unpack(&bytes, &confined()).unwrap();
    assert_eq!(
        std::fs::read(
            s.item()
                .join("a".repeat(200))
                .join("b".repeat(200))
                .join("f")
        )
        .unwrap(),
        b"deep"
    );
}
