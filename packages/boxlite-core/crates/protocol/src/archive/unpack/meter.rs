//! The reader the archive is parsed through: it counts the bytes consumed and stops an entry
//! whose headers (long names, pax records, skipped data) grow past [`MAX_ENTRY_HEADER_BYTES`].

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// Bytes one entry's headers (its ustar header, GNU long names, pax records and the padding of
/// an entry that is skipped) may take: far more than any real path needs, little enough to
/// hold in memory.
pub const MAX_ENTRY_HEADER_BYTES: u64 = 1024 * 1024;
/// Counts what the archive reader consumes, and stops it when an entry's headers (read while
/// the next entry is parsed) grow past [`MAX_ENTRY_HEADER_BYTES`].
pub(super) struct Metered<R> {
    pub(super) inner: R,
    pub(super) meter: Rc<Meter>,
}

#[derive(Default)]
pub(super) struct Meter {
    pub(super) total: Cell<u64>,
    /// Bytes read since [`Meter::begin_headers`], while `in_headers` is set.
    pub(super) header_bytes: Cell<u64>,
    pub(super) in_headers: Cell<bool>,
}

impl Meter {
    pub(super) fn begin_headers(&self) {
        self.header_bytes.set(0);
        self.in_headers.set(true);
    }

    /// Ends the header phase; returns the bytes it read.
    pub(super) fn end_headers(&self) -> u64 {
        self.in_headers.set(false);
        self.header_bytes.get()
    }
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = buf;
        if self.meter.in_headers.get() {
            let left = MAX_ENTRY_HEADER_BYTES.saturating_sub(self.meter.header_bytes.get());
            if left == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "an entry's headers (long names, pax records, skipped data) exceed {MAX_ENTRY_HEADER_BYTES} bytes"
                    ),
                ));
            }
            let cap = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            buf = &mut buf[..cap];
        }
        let n = self.inner.read(buf)?;
        self.meter.total.set(self.meter.total.get() + n as u64);
        if self.meter.in_headers.get() {
            self.meter
                .header_bytes
                .set(self.meter.header_bytes.get() + n as u64);
        }
        Ok(n)
    }
}
