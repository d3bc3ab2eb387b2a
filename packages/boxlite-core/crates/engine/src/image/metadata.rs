//! Image metadata (OCI indexes, manifests, configs, `docker save` manifests) is untrusted and
//! small: every read of it goes through [`read_capped`], every stated size through
//! [`check_stated`], so that no image can make the engine hold more than
//! [`MAX_METADATA_BYTES`] of it.

use std::io::Read;

/// Largest index, manifest or image config read into memory (images from real registries
/// have a few KiB; a config with a long history a few hundred).
pub const MAX_METADATA_BYTES: u64 = 4 << 20;

/// Why a piece of image metadata was refused; `what` names it.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// Its container (a descriptor, a tar header, a file) states more than the cap.
    #[error("{what} is stated to have {stated} bytes, more than the {MAX_METADATA_BYTES} an image's metadata may have")]
    StatedTooLarge { what: String, stated: u64 },
    /// Reading it failed.
    #[error("{what}: {source}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// It went on past the cap, whatever it stated.
    #[error("{what} has more than the {MAX_METADATA_BYTES} bytes an image's metadata may have")]
    TooLarge { what: String },
}

/// Refuses metadata whose container (a descriptor, a tar header, a file) states more than
/// [`MAX_METADATA_BYTES`]; `what` names it in the message.
pub fn check_stated(what: &str, stated: u64) -> Result<(), MetadataError> {
    if stated > MAX_METADATA_BYTES {
        return Err(MetadataError::StatedTooLarge {
            what: what.to_owned(),
            stated,
        });
    }
    Ok(())
}

/// Reads `what` from `reader`: at most [`MAX_METADATA_BYTES`], refusing a stated size above
/// that before reading and a longer stream (whatever it stated) after one byte too many.
pub fn read_capped(what: &str, stated: u64, reader: impl Read) -> Result<Vec<u8>, MetadataError> {
    check_stated(what, stated)?;
    let mut data = Vec::new();
    reader
        .take(MAX_METADATA_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|source| MetadataError::Read {
            what: what.to_owned(),
            source,
        })?;
    if data.len() as u64 > MAX_METADATA_BYTES {
        return Err(MetadataError::TooLarge {
            what: what.to_owned(),
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_cap_and_refuses_more() {
        let max = MAX_METADATA_BYTES as usize;
        assert_eq!(read_capped("x", 3, &b"abc"[..]).unwrap(), b"abc");
        assert_eq!(
            read_capped("x", 0, &vec![b'a'; max][..]).unwrap().len(),
            max
        );
        // A stream longer than it said.
        let err = read_capped("manifest.json", 0, &vec![b'a'; max + 1][..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("manifest.json has more than the {MAX_METADATA_BYTES} bytes an image's metadata may have")
        );
        // A stated size over the cap: refused before a byte is read.
        let err = read_capped("config", u64::MAX, std::io::repeat(b'a')).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("config is stated to have {} bytes, more than the {MAX_METADATA_BYTES} an image's metadata may have", u64::MAX)
        );
    }
}
