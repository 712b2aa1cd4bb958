//! The checksummed frame: `crc32c (u32 LE) | payload`. Every record the log writes is sealed in
//! one, and opening a frame verifies the checksum before the payload is looked at.

use crate::{Error, Result};

/// Bytes a frame adds to its payload.
pub const FRAME_OVERHEAD: usize = 4;

/// Wraps `payload` in a frame whose checksum covers every payload byte.
pub fn seal_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_OVERHEAD + payload.len());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Verifies a frame and returns its payload. `location` names the record in the error.
pub fn open_frame<'a>(bytes: &'a [u8], location: &dyn std::fmt::Display) -> Result<&'a [u8]> {
    if bytes.len() < FRAME_OVERHEAD {
        return Err(Error::Corrupted(format!(
            "{location}: frame of {} bytes is shorter than its {FRAME_OVERHEAD}-byte checksum",
            bytes.len()
        )));
    }
    let (sum, payload) = bytes.split_at(FRAME_OVERHEAD);
    let stored = u32::from_le_bytes(sum.try_into().expect("split at 4"));
    let actual = crc32c::crc32c(payload);
    if stored != actual {
        return Err(Error::Corrupted(format!(
            "{location}: checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        )));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests;
