//! Gorilla compression of a block of time-series points (Pelkonen et al., "Gorilla: A Fast,
//! Scalable, In-Memory Time Series Database", VLDB 2015, §4.1).
//!
//! A block holds points in timestamp order (equal timestamps allowed). The first point is
//! stored as is (the timestamp in the block header, the value's 64 bits in the stream); every
//! later point as
//! - its **delta of delta** `D = (tₙ - tₙ₋₁) - (tₙ₋₁ - tₙ₋₂)` (the delta before the second point
//!   is 0) in the paper's buckets: `0` for D = 0; `10` + 7 bits, `110` + 9 bits, `1110` +
//!   12 bits, `1111` + 32 bits, each a two's complement field (7 bits: -64..=63, the paper's
//!   -63..=64 shifted by one so the field is plain two's complement). Timestamps are
//!   milliseconds (the paper's are seconds), so a regular series costs one bit per timestamp
//!   either way;
//! - its **value XORed with the previous value**: `0` when equal; else `1`, then `0` + the
//!   meaningful bits when they fit in the previous window (at least as many leading and
//!   trailing zeros), or `1` + 5 bits of leading zeros (at most 31) + 6 bits of meaningful
//!   length (64 written as 0) + the meaningful bits, which opens a new window.
//!
//! Values round-trip bit for bit: NaN payloads, ±inf, -0.0 (XOR works on the bits, not the
//! numbers). [`Block::push`] refuses a point older than the block's last one, and one whose
//! delta of delta does not fit 32 bits; the view keeps blocks to time windows of at most a day,
//! where neither happens, and merges out-of-order points by re-encoding their window.

/// The encoder's state after the last point: enough to append without decoding the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    count: u32,
    first_ts: i64,
    last_ts: i64,
    last_delta: i64,
    last_bits: u64,
    leading: u8,
    trailing: u8,
    bits: BitWriter,
}

/// Why a point cannot be appended to a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// Its timestamp is before the block's last one.
    OutOfOrder,
    /// Its delta of delta needs more than 32 bits.
    TooFar,
}

/// Bytes of the serialized header ([`Block::to_bytes`]).
pub const HEADER_BYTES: usize = 1 + 4 + 8 + 8 + 8 + 8 + 1 + 1 + 8;
const FORMAT: u8 = 1;

impl Block {
    /// A block holding the single point `(ts, value)`.
    pub fn new(ts: i64, value: f64) -> Block {
        let mut bits = BitWriter::default();
        bits.push(value.to_bits(), 64);
        Block {
            count: 1,
            first_ts: ts,
            last_ts: ts,
            last_delta: 0,
            last_bits: value.to_bits(),
            // No window yet: the first non-zero XOR opens one.
            leading: u8::MAX,
            trailing: 0,
            bits,
        }
    }

    /// Encodes `points` (in timestamp order) into one block; `None` when empty or when a point
    /// cannot follow its predecessor.
    pub fn encode(points: &[(i64, f64)]) -> Option<Block> {
        let (&(ts, value), rest) = points.split_first()?;
        let mut block = Block::new(ts, value);
        for &(ts, value) in rest {
            block.push(ts, value).ok()?;
        }
        Some(block)
    }

    /// Points in the block.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Never: a block holds at least one point.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Timestamp of the first point.
    pub fn first_ts(&self) -> i64 {
        self.first_ts
    }

    /// Timestamp of the last point.
    pub fn last_ts(&self) -> i64 {
        self.last_ts
    }

    /// Bits of the compressed stream (without the header).
    pub fn bit_len(&self) -> u64 {
        self.bits.len
    }

    /// Appends a point at or after the last one.
    pub fn push(&mut self, ts: i64, value: f64) -> Result<(), PushError> {
        if ts < self.last_ts {
            return Err(PushError::OutOfOrder);
        }
        let delta = ts.checked_sub(self.last_ts).ok_or(PushError::TooFar)?;
        let dod = delta
            .checked_sub(self.last_delta)
            .ok_or(PushError::TooFar)?;
        if i32::try_from(dod).is_err() {
            return Err(PushError::TooFar);
        }
        let field = |n: u32| (dod as u64) & ((1u64 << n) - 1);
        match dod {
            0 => self.bits.push(0, 1),
            -64..=63 => {
                self.bits.push(0b10, 2);
                self.bits.push(field(7), 7);
            }
            -256..=255 => {
                self.bits.push(0b110, 3);
                self.bits.push(field(9), 9);
            }
            -2048..=2047 => {
                self.bits.push(0b1110, 4);
                self.bits.push(field(12), 12);
            }
            _ => {
                self.bits.push(0b1111, 4);
                self.bits.push(field(32), 32);
            }
        }
        let bits = value.to_bits();
        let xor = bits ^ self.last_bits;
        if xor == 0 {
            self.bits.push(0, 1);
        } else {
            let leading = (xor.leading_zeros() as u8).min(31);
            let trailing = xor.trailing_zeros() as u8;
            if self.leading != u8::MAX && leading >= self.leading && trailing >= self.trailing {
                let meaningful = 64 - u32::from(self.leading) - u32::from(self.trailing);
                self.bits.push(0b10, 2);
                self.bits.push(xor >> self.trailing, meaningful);
            } else {
                let meaningful = 64 - u32::from(leading) - u32::from(trailing);
                self.bits.push(0b11, 2);
                self.bits.push(u64::from(leading), 5);
                self.bits.push(u64::from(meaningful & 63), 6);
                self.bits.push(xor >> trailing, meaningful);
                self.leading = leading;
                self.trailing = trailing;
            }
        }
        self.count += 1;
        self.last_delta = delta;
        self.last_ts = ts;
        self.last_bits = bits;
        Ok(())
    }

    /// The points, in order.
    pub fn iter(&self) -> Decoder<'_> {
        Decoder {
            reader: BitReader::new(&self.bits.bytes),
            remaining: self.count,
            first: true,
            ts: self.first_ts,
            delta: 0,
            bits: 0,
            leading: 0,
            trailing: 0,
        }
    }

    /// Decodes every point.
    pub fn decode(&self) -> Vec<(i64, f64)> {
        self.iter().collect()
    }

    /// The stored form: a header with the encoder's state, then the bit stream.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.bits.bytes.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.first_ts.to_le_bytes());
        out.extend_from_slice(&self.last_ts.to_le_bytes());
        out.extend_from_slice(&self.last_delta.to_le_bytes());
        out.extend_from_slice(&self.last_bits.to_le_bytes());
        out.push(self.leading);
        out.push(self.trailing);
        out.extend_from_slice(&self.bits.len.to_le_bytes());
        out.extend_from_slice(&self.bits.bytes);
        out
    }

    /// Reads the stored form back; `None` when it is not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Block> {
        let (header, stream) = bytes.split_at_checked(HEADER_BYTES)?;
        if header[0] != FORMAT {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes"));
        let len = u64_at(39);
        if count == 0 || len.div_ceil(8) != stream.len() as u64 {
            return None;
        }
        Some(Block {
            count,
            first_ts: u64_at(5) as i64,
            last_ts: u64_at(13) as i64,
            last_delta: u64_at(21) as i64,
            last_bits: u64_at(29),
            leading: header[37],
            trailing: header[38],
            bits: BitWriter {
                bytes: stream.to_vec(),
                len,
            },
        })
    }
}

/// Iterates over a block's points.
#[derive(Debug)]
pub struct Decoder<'a> {
    reader: BitReader<'a>,
    remaining: u32,
    first: bool,
    ts: i64,
    delta: i64,
    bits: u64,
    leading: u32,
    trailing: u32,
}

impl Iterator for Decoder<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let r = &mut self.reader;
        if self.first {
            self.first = false;
            self.bits = r.read(64);
            return Some((self.ts, f64::from_bits(self.bits)));
        }
        let signed = |v: u64, n: u32| ((v << (64 - n)) as i64) >> (64 - n);
        let dod = if r.read(1) == 0 {
            0
        } else if r.read(1) == 0 {
            signed(r.read(7), 7)
        } else if r.read(1) == 0 {
            signed(r.read(9), 9)
        } else if r.read(1) == 0 {
            signed(r.read(12), 12)
        } else {
            signed(r.read(32), 32)
        };
        self.delta = self.delta.wrapping_add(dod);
        self.ts = self.ts.wrapping_add(self.delta);
        if r.read(1) == 1 {
            if r.read(1) == 1 {
                self.leading = r.read(5) as u32;
                let meaningful = match r.read(6) as u32 {
                    0 => 64,
                    n => n,
                };
                self.trailing = 64 - self.leading - meaningful;
            }
            let meaningful = 64 - self.leading - self.trailing;
            self.bits ^= r.read(meaningful) << self.trailing;
        }
        Some((self.ts, f64::from_bits(self.bits)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

/// Bits appended most significant first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct BitWriter {
    bytes: Vec<u8>,
    len: u64,
}

impl BitWriter {
    /// Appends the low `n` bits of `value` (n ≤ 64).
    fn push(&mut self, value: u64, n: u32) {
        let mut left = n;
        while left > 0 {
            let used = (self.len % 8) as u32;
            if used == 0 {
                self.bytes.push(0);
            }
            let room = 8 - used;
            let take = room.min(left);
            let chunk = ((value >> (left - take)) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.last_mut().expect("pushed");
            *last |= chunk << (room - take);
            self.len += u64::from(take);
            left -= take;
        }
    }
}

/// Reads bits most significant first; past the end it reads zeros (a block's count bounds
/// what is read, and `from_bytes` checks the stream's length).
#[derive(Debug)]
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: u64,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }

    /// The next `n` bits (n ≤ 64) as the low bits of the answer.
    #[inline]
    fn read(&mut self, n: u32) -> u64 {
        if n == 0 {
            return 0;
        }
        let byte = (self.pos / 8) as usize;
        let shift = (self.pos % 8) as u32;
        self.pos += u64::from(n);
        let word = self.word_at(byte);
        if n + shift <= 64 {
            (word << shift) >> (64 - n)
        } else {
            // The word holds the first 64 - shift bits; the rest starts the next word.
            let first = 64 - shift;
            let rest = n - first;
            let high = (word << shift) >> shift;
            (high << rest) | (self.word_at(byte + 8) >> (64 - rest))
        }
    }

    /// Eight bytes from `byte`, big-endian, zeros past the end.
    #[inline]
    fn word_at(&self, byte: usize) -> u64 {
        match self.bytes.get(byte..byte + 8) {
            Some(b) => u64::from_be_bytes(b.try_into().expect("8 bytes")),
            None => {
                let mut w = [0u8; 8];
                let end = self.bytes.len().min(byte + 8);
                if byte < end {
                    w[..end - byte].copy_from_slice(&self.bytes[byte..end]);
                }
                u64::from_be_bytes(w)
            }
        }
    }
}

#[cfg(test)]
mod tests;
