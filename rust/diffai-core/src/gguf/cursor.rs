//! Bounds-checked little-endian reads over the file's bytes: every read says what it lacked
//! instead of slicing past the end.

pub(super) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

pub(super) type Read<T> = std::result::Result<T, String>;

impl<'a> Cursor<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    pub(super) fn position(&self) -> usize {
        self.pos
    }

    /// The bytes read since position `start`.
    pub(super) fn bytes_between(&self, start: usize) -> &'a [u8] {
        &self.bytes[start..self.pos]
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(super) fn take(&mut self, n: u64) -> Read<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(format!(
                "{n} bytes needed at byte {} but the file ends at {} (truncated?)",
                self.pos,
                self.bytes.len()
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Read<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }

    pub(super) fn u8(&mut self) -> Read<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Read<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(super) fn u32(&mut self) -> Read<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Read<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 length, then that many bytes (UTF-8; invalid bytes are replaced).
    pub(super) fn string(&mut self) -> Read<String> {
        let len = self.u64()?;
        let raw = self.take(len)?;
        Ok(String::from_utf8_lossy(raw).into_owned())
    }

    /// Refuses a count of items of at least `min_size` bytes each that cannot fit in the rest
    /// of the file.
    pub(super) fn check_count(&self, count: u64, min_size: u64, what: &str) -> Read<()> {
        if count.saturating_mul(min_size) > self.remaining() as u64 {
            return Err(format!(
                "{count} {what} cannot fit in the {} bytes left after byte {}",
                self.remaining(),
                self.pos
            ));
        }
        Ok(())
    }
}
