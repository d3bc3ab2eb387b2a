//! What preparing one image may write ([`ImageLimits`]), and the reservation that checks each
//! file's declared size against the limit and the free space before a byte is written.

use std::io;
use std::path::Path;

use super::{invalid, Unpacker};

/// What preparing one image may write: hostile images (gzip bombs, sparse-file bombs, millions
/// of empty files) fail with an error naming the limit long before the disk fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ImageLimits {
    /// Most bytes of file content an image may unpack to (all layers together; a file a later
    /// layer overwrites counts twice). Also caps the sum of its layers' stated sizes on a pull.
    pub image_max_bytes: u64,
    /// Most tar entries an image may hold (all layers together, whiteouts included).
    pub image_max_entries: u64,
}

/// Default [`ImageLimits::image_max_bytes`]: 16 GiB.
pub const DEFAULT_IMAGE_MAX_BYTES: u64 = 16 << 30;
/// Default [`ImageLimits::image_max_entries`].
pub const DEFAULT_IMAGE_MAX_ENTRIES: u64 = 1_000_000;

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            image_max_bytes: DEFAULT_IMAGE_MAX_BYTES,
            image_max_entries: DEFAULT_IMAGE_MAX_ENTRIES,
        }
    }
}

impl ImageLimits {
    /// The error for an image over `image_max_bytes`.
    pub fn too_many_bytes(&self, what: &str) -> io::Error {
        invalid(format!(
            "{what} more than {} bytes, the limit image_max_bytes; if you trust this image, \
             raise it: Options(image_max_bytes=...)",
            self.image_max_bytes
        ))
    }
}
impl Unpacker {
    /// Checks that `more` bytes of file content fit the limit and the free space.
    pub(super) fn reserve(&self, rel: &Path, more: u64) -> io::Result<()> {
        let total = self.written.saturating_add(more);
        if total > self.limits.image_max_bytes {
            return Err(self.limits.too_many_bytes(&format!(
                "{} (declared {more} bytes) takes the image to",
                rel.display()
            )));
        }
        if let Some(free) = self.free_space {
            if total > free {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!(
                        "not enough free space to unpack the image: {} (declared {more} bytes) takes it to \
                         {total} bytes, and only {free} can be staged (the base disk needs the same again); \
                         free some space (runtime.images.prune()) or put BOXLITE_HOME on a larger disk",
                        rel.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}
