//! Layers against a temporary root: whiteouts, owners, escaping symlinks, the limits.

use std::fs;
use std::io;
use std::path::Path;

use tar::EntryType;

use super::paths::normalise;
use super::*;

fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn add(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: EntryType,
    mode: u32,
    uid: u64,
    data: &[u8],
    link: Option<&str>,
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_size(data.len() as u64);
    if matches!(kind, EntryType::Char | EntryType::Block) {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    if let Some(l) = link {
        b.append_link(&mut h, path, l).unwrap();
    } else {
        b.append_data(&mut h, path, data).unwrap();
    }
}

#[test]
fn whiteouts_owners_and_escaping_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut u = Unpacker::new(&root).unwrap();
    u.apply_layer(
        &layer(|b| {
            add(b, "data/", EntryType::Directory, 0o755, 0, b"", None);
            add(
                b,
                "data/keep",
                EntryType::Regular,
                0o640,
                1000,
                b"keep",
                None,
            );
            add(b, "data/gone", EntryType::Regular, 0o644, 0, b"x", None);
            add(b, "data/opq/old", EntryType::Regular, 0o644, 0, b"x", None);
            add(b, "data/secret", EntryType::Regular, 0o000, 0, b"s", None);
            add(b, "escape", EntryType::Symlink, 0o777, 0, b"", Some("/"));
            add(b, "dev/null", EntryType::Char, 0o666, 0, b"", None);
        })[..],
    )
    .unwrap();
    u.apply_layer(
        &layer(|b| {
            add(b, "data/.wh.gone", EntryType::Regular, 0o644, 0, b"", None);
            add(
                b,
                "data/opq/.wh..wh..opq",
                EntryType::Regular,
                0o644,
                0,
                b"",
                None,
            );
            add(b, "data/opq/new", EntryType::Regular, 0o644, 0, b"n", None);
            add(
                b,
                "escape/tmp/canary",
                EntryType::Regular,
                0o644,
                0,
                b"c",
                None,
            );
            add(
                b,
                "data/hard",
                EntryType::Link,
                0o644,
                0,
                b"",
                Some("data/keep"),
            );
        })[..],
    )
    .unwrap();
    let m = u.into_manifest();
    assert_eq!(
        m[Path::new("data/keep")],
        Meta {
            kind: Kind::File,
            mode: 0o640,
            uid: 1000,
            gid: 1000
        }
    );
    assert_eq!(m[Path::new("data/hard")], m[Path::new("data/keep")]);
    assert!(!m.contains_key(Path::new("data/gone")) && !root.join("data/gone").exists());
    assert!(!m.contains_key(Path::new("data/opq/old")) && !root.join("data/opq/old").exists());
    assert!(root.join("data/opq/new").exists());
    assert_eq!(m[Path::new("data/secret")].mode, 0);
    assert_eq!(
        fs::read(root.join("data/secret")).unwrap(),
        b"s",
        "staged files stay readable"
    );
    assert_eq!(
        m[Path::new("dev/null")].kind,
        Kind::CharDevice { major: 1, minor: 3 }
    );
    // The write through the absolute symlink landed inside the root.
    assert_eq!(fs::read(root.join("tmp/canary")).unwrap(), b"c");
    assert!(m.contains_key(Path::new("tmp/canary")));
}

fn small_limits() -> ImageLimits {
    ImageLimits {
        image_max_bytes: 1 << 20,
        image_max_entries: 10,
    }
}

#[test]
fn a_file_over_the_byte_limit_is_refused_and_no_more_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut u = Unpacker::new(dir.path()).unwrap();
    u.set_limits(small_limits());
    let big = vec![0u8; (1 << 20) + 1];
    let err = u
        .apply_layer(&layer(|b| add(b, "big", EntryType::Regular, 0o644, 0, &big, None))[..])
        .unwrap_err();
    assert!(err.to_string().contains("image_max_bytes"), "{err}");
    assert_eq!(u.written(), 0);
    assert!(
        !dir.path().join("big").exists(),
        "refused before it was created"
    );
}

#[test]
fn a_huge_declared_size_fails_before_anything_is_written() {
    // A 1 TiB header with no data behind it: refused on the header alone.
    let dir = tempfile::tempdir().unwrap();
    let mut u = Unpacker::new(dir.path()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_path("sparse-bomb").unwrap();
    h.set_size(1 << 40);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    let mut raw = h.as_bytes().to_vec();
    raw.extend_from_slice(&[0u8; 4096]);
    let err = u.apply_layer(&raw[..]).unwrap_err();
    assert!(
        err.to_string().contains("declared 1099511627776 bytes")
            && err.to_string().contains("image_max_bytes"),
        "{err}"
    );
    assert!(!dir.path().join("sparse-bomb").exists());
}

#[test]
fn free_space_is_checked_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut u = Unpacker::new(dir.path()).unwrap();
    u.set_free_space(100);
    let err = u
        .apply_layer(&layer(|b| add(b, "f", EntryType::Regular, 0o644, 0, &[1; 200], None))[..])
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
    assert!(err.to_string().contains("not enough free space"), "{err}");
}

#[test]
fn too_many_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut u = Unpacker::new(dir.path()).unwrap();
    u.set_limits(small_limits());
    let err = u
        .apply_layer(
            &layer(|b| {
                for i in 0..11 {
                    add(b, &format!("f{i}"), EntryType::Regular, 0o644, 0, b"", None);
                }
            })[..],
        )
        .unwrap_err();
    assert!(err.to_string().contains("image_max_entries"), "{err}");
}

#[test]
fn malformed_whiteouts_are_refused_and_delete_nothing() {
    for bad in [".wh.", ".wh..", ".wh...", "sub/.wh...", ".wh..wh.plnk"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let canary = dir.path().join("canary");
        fs::write(&canary, b"c").unwrap();
        let mut u = Unpacker::new(&root).unwrap();
        u.apply_layer(&layer(|b| add(b, "sub/keep", EntryType::Regular, 0o644, 0, b"k", None))[..])
            .unwrap();
        let err = u
            .apply_layer(&layer(|b| add(b, bad, EntryType::Regular, 0o644, 0, b"", None))[..])
            .unwrap_err();
        assert!(err.to_string().contains("malformed"), "{bad}: {err}");
        assert!(canary.exists() && root.join("sub/keep").exists(), "{bad}");
    }
}

#[test]
fn names_debugfs_could_misread_are_refused() {
    for (name, why) in [
        (
            "a\nsif /etc/shadow mode 0777".to_owned(),
            "control character",
        ),
        ("tab\there".to_owned(), "control character"),
        ("x".repeat(256), "at most 255 bytes"),
        (vec!["y".repeat(255); 17].join("/"), "at most 4095 bytes"),
    ] {
        let err = normalise(Path::new(&name)).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    assert!(normalise(Path::new(&"z".repeat(255))).is_ok());
}

#[test]
fn parent_dir_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut u = Unpacker::new(dir.path()).unwrap();
    let mut raw = layer(|b| add(b, "ok", EntryType::Regular, 0o644, 0, b"", None));
    // Patch the name field to "../x" (append_data refuses to write it).
    raw[..4].copy_from_slice(b"../x");
    raw[4..6].copy_from_slice(b"\0\0");
    let mut h = tar::Header::from_byte_slice(&raw[..512]).clone();
    h.set_cksum();
    raw[..512].copy_from_slice(h.as_bytes());
    let err = u.apply_layer(&raw[..]).unwrap_err();
    assert!(err.to_string().contains("escapes the root"), "{err}");
}
