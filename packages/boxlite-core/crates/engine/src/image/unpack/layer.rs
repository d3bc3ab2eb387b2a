//! Applying one layer: each tar entry checked (entry count, name), whiteouts handled, and the
//! entry written into the staging root as the user's own file, its real metadata recorded.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use tar::EntryType;

use super::paths::normalise;
use super::whiteout::{remove_any, whiteout_target, OPAQUE_WHITEOUT};
use super::{invalid, Kind, Meta, Unpacker};

impl Unpacker {
    /// Applies one layer (an uncompressed tar stream) on top of what is there.
    pub fn apply_layer<R: Read>(&mut self, layer: R) -> io::Result<()> {
        self.this_layer.clear();
        let mut archive = tar::Archive::new(layer);
        for entry in archive.entries()? {
            let mut entry = entry?;
            self.entries += 1;
            if self.entries > self.limits.image_max_entries {
                return Err(invalid(format!(
                    "the image has more than {} entries, the limit image_max_entries; if you trust \
                     this image, raise it: Options(image_max_entries=...)",
                    self.limits.image_max_entries
                )));
            }
            let raw_path = entry.path()?.into_owned();
            let rel = normalise(&raw_path)?;
            let header = entry.header();
            let meta = Meta {
                kind: Kind::File,
                mode: header.mode()? & 0o7777,
                uid: header.uid()? as u32,
                gid: header.gid()? as u32,
            };
            if rel.as_os_str().is_empty() {
                // The root directory's own entry ("./").
                self.manifest.insert(
                    PathBuf::new(),
                    Meta {
                        kind: Kind::Dir,
                        ..meta
                    },
                );
                continue;
            }
            let name = rel
                .file_name()
                .expect("normalised path has a name")
                .to_owned();
            let parent = self.resolve_parent(&rel)?;
            let target = parent.join(&name);
            let host = self.root.join(&target);
            let name_str = name.to_string_lossy();

            if name_str == OPAQUE_WHITEOUT {
                self.clear_directory(&parent)?;
                continue;
            }
            if let Some(hidden) = whiteout_target(&name_str)? {
                let doomed = parent.join(hidden);
                remove_any(&self.root.join(&doomed))?;
                self.forget(&doomed);
                continue;
            }

            let entry_type = header.entry_type();
            let existing = fs::symlink_metadata(&host).ok();
            let keep_existing_dir =
                entry_type == EntryType::Directory && existing.as_ref().is_some_and(|m| m.is_dir());
            if !keep_existing_dir && existing.is_some() {
                remove_any(&host)?;
                self.forget(&target);
            }
            let meta = match entry_type {
                EntryType::Directory => {
                    if !keep_existing_dir {
                        fs::DirBuilder::new().mode(0o755).create(&host)?;
                    }
                    Meta {
                        kind: Kind::Dir,
                        ..meta
                    }
                }
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    // The size the header declares (for a GNU sparse entry, its expanded size)
                    // is checked before a byte is written; the copy is capped all the same.
                    let declared = entry.size();
                    self.reserve(&rel, declared)?;
                    let mut file = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o644)
                        .open(&host)?;
                    let room = self.limits.image_max_bytes - self.written;
                    let copied =
                        io::copy(&mut (&mut entry).take(room.saturating_add(1)), &mut file)?;
                    if copied > room {
                        return Err(self
                            .limits
                            .too_many_bytes(&format!("{} takes the image to", rel.display())));
                    }
                    self.written += copied;
                    meta
                }
                EntryType::Symlink => {
                    let link = entry.link_name()?.ok_or_else(|| {
                        invalid(format!("symlink {} has no target", rel.display()))
                    })?;
                    std::os::unix::fs::symlink(&link, &host)?;
                    Meta {
                        kind: Kind::Symlink,
                        mode: 0o777,
                        ..meta
                    }
                }
                EntryType::Link => {
                    let link = entry.link_name()?.ok_or_else(|| {
                        invalid(format!("hard link {} has no target", rel.display()))
                    })?;
                    let link_rel = normalise(&link)?;
                    let link_parent = self.resolve_parent(&link_rel)?;
                    let source = link_parent.join(link_rel.file_name().unwrap_or_default());
                    let source_meta = *self.manifest.get(&source).ok_or_else(|| {
                        invalid(format!(
                            "hard link {} points at missing {}",
                            rel.display(),
                            link.display()
                        ))
                    })?;
                    if source_meta.kind.is_special() {
                        // No host file to link; record a second node with the same metadata.
                        source_meta
                    } else {
                        fs::hard_link(self.root.join(&source), &host)?;
                        source_meta
                    }
                }
                EntryType::Fifo => Meta {
                    kind: Kind::Fifo,
                    ..meta
                },
                EntryType::Char | EntryType::Block => {
                    let major = header.device_major().ok().flatten().unwrap_or(0);
                    let minor = header.device_minor().ok().flatten().unwrap_or(0);
                    let kind = if entry_type == EntryType::Char {
                        Kind::CharDevice { major, minor }
                    } else {
                        Kind::BlockDevice { major, minor }
                    };
                    Meta { kind, ..meta }
                }
                // PAX/GNU extension headers are consumed by the tar reader; others carry nothing.
                _ => continue,
            };
            if let Ok(mtime) = entry.header().mtime() {
                let time = filetime::FileTime::from_unix_time(mtime as i64, 0);
                let _ = filetime::set_symlink_file_times(&host, time, time);
            }
            self.manifest.insert(target.clone(), meta);
            self.this_layer.insert(target);
        }
        Ok(())
    }
}
