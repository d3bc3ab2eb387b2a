//! The file builtins' shared vocabulary: how a failed file operation says why (its exit code),
//! and the description of a file that `Stat` and `ListDir` send back (postcard frames on the
//! builtin's stdout, decoded by the host with [`decode_file_infos`] under a size cap).

use serde::{Deserialize, Serialize};

use crate::{decode_payload, ProtocolError};

/// Why a file builtin failed. The builtin exits with [`FileFailure::exit_code`] and writes a
/// message to stderr; the host turns the code back into the matching error kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileFailure {
    /// Any other failure (an I/O error, a file of a kind the operation cannot take).
    Other,
    NotFound,
    IsADirectory,
    NotADirectory,
    PermissionDenied,
    AlreadyExists,
    /// The file holds more bytes than the read may return, or the directory more entries.
    TooLarge,
}

impl FileFailure {
    const CODES: [(FileFailure, i32); 7] = [
        (FileFailure::Other, 1),
        (FileFailure::NotFound, 2),
        (FileFailure::IsADirectory, 3),
        (FileFailure::NotADirectory, 4),
        (FileFailure::PermissionDenied, 5),
        (FileFailure::AlreadyExists, 6),
        (FileFailure::TooLarge, 7),
    ];

    /// The exit code of a builtin that failed this way.
    pub fn exit_code(self) -> i32 {
        Self::CODES
            .iter()
            .find(|(failure, _)| *failure == self)
            .map_or(1, |(_, code)| *code)
    }

    /// The failure a builtin's non-zero exit code stands for (`Other` for codes it never uses).
    pub fn from_exit_code(code: i32) -> FileFailure {
        Self::CODES
            .iter()
            .find(|(_, c)| *c == code)
            .map_or(FileFailure::Other, |(failure, _)| *failure)
    }

    /// The failure an I/O error stands for.
    pub fn from_io(error: &std::io::Error) -> FileFailure {
        use std::io::ErrorKind;
        match error.kind() {
            ErrorKind::NotFound => FileFailure::NotFound,
            ErrorKind::IsADirectory => FileFailure::IsADirectory,
            ErrorKind::NotADirectory => FileFailure::NotADirectory,
            ErrorKind::PermissionDenied => FileFailure::PermissionDenied,
            ErrorKind::AlreadyExists => FileFailure::AlreadyExists,
            ErrorKind::FileTooLarge => FileFailure::TooLarge,
            _ => FileFailure::Other,
        }
    }
}

/// What a directory entry or a stat'ed path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

impl FileKind {
    /// The lower-case name the Python API uses.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        }
    }
}

/// One file as `Stat` and `ListDir` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The entry's name (the path's last component for `Stat`), lossily UTF-8.
    pub name: String,
    pub kind: FileKind,
    /// Size in bytes (of the link itself for a symlink).
    pub size: u64,
    /// Permission bits and the set-id/sticky bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Last modification, in nanoseconds since the epoch (0 when before it).
    pub mtime_ns: u64,
    /// Where a symlink points (lossily UTF-8); `None` for anything else.
    pub link_target: Option<String>,
}

/// Longest encoded [`FileInfo`] the host accepts: a name and a link target of `PATH_MAX`
/// bytes each, with room for the fixed fields.
pub const MAX_FILE_INFO_LEN: usize = 2 * 4096 + 256;

/// Decodes a builtin's stdout as a sequence of length-prefixed [`FileInfo`] frames (as
/// [`crate::encode_frame`] writes them). The bytes come from the box: every length is
/// checked against [`MAX_FILE_INFO_LEN`] before use, and a truncated frame is an error.
pub fn decode_file_infos(mut bytes: &[u8]) -> Result<Vec<FileInfo>, ProtocolError> {
    let mut infos = Vec::new();
    while !bytes.is_empty() {
        let Some((prefix, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(truncated());
        };
        let len = crate::checked_len(*prefix, MAX_FILE_INFO_LEN)?;
        if rest.len() < len {
            return Err(truncated());
        }
        let (payload, rest) = rest.split_at(len);
        infos.push(decode_payload(payload)?);
        bytes = rest;
    }
    Ok(infos)
}

fn truncated() -> ProtocolError {
    ProtocolError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "a file description was cut short",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_frame;

    fn info(name: &str) -> FileInfo {
        FileInfo {
            name: name.into(),
            kind: FileKind::File,
            size: 3,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
            link_target: None,
        }
    }

    #[test]
    fn exit_codes_round_trip_and_unknown_codes_are_other() {
        for (failure, code) in FileFailure::CODES {
            assert_eq!(failure.exit_code(), code);
            assert_eq!(FileFailure::from_exit_code(code), failure);
        }
        assert_eq!(FileFailure::from_exit_code(99), FileFailure::Other);
        assert_eq!(FileFailure::from_exit_code(137), FileFailure::Other);
    }

    #[test]
    fn infos_decode_in_order() {
        let mut bytes = encode_frame(&info("a")).unwrap();
        bytes.extend(encode_frame(&info("b")).unwrap());
        let names: Vec<String> = decode_file_infos(&bytes)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(decode_file_infos(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_lying_length_or_a_cut_frame_is_refused() {
        let huge = ((MAX_FILE_INFO_LEN + 1) as u32).to_le_bytes();
        assert!(matches!(
            decode_file_infos(&huge),
            Err(ProtocolError::FrameTooLarge(..))
        ));
        let whole = encode_frame(&info("a")).unwrap();
        assert!(decode_file_infos(&whole[..whole.len() - 1]).is_err());
        assert!(decode_file_infos(&whole[..2]).is_err());
        // Garbage that is not a FileInfo.
        assert!(decode_file_infos(&[1, 0, 0, 0, 0xff]).is_err());
    }
}
