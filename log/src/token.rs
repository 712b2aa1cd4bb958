//! Consistency tokens: a set of log positions, at most one (the highest) per shard, and their
//! opaque text encoding (byte format in `docs/design/token.md`). Invariants: a `Token` never holds
//! two LSNs for one shard, and every `Token` has exactly one text form, so
//! `Token::decode(&t.encode()) == Ok(t)` and any string that decodes re-encodes to itself.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{Lsn, Position, ShardId};

/// The version prefix of the current text encoding.
pub const TOKEN_PREFIX: &str = "t1.";

/// Longest token text [`Token::decode`] accepts, in bytes. A position takes at most 15 bytes
/// (20 base64 characters), so this admits tokens over more than 3,000 shards while bounding the
/// work a hostile client can ask for.
pub const TOKEN_TEXT_LEN_MAX: usize = 64 * 1024;

/// Bytes of the checksum that ends every encoded token.
const CHECKSUM_LEN: usize = 4;

/// URL-safe base64 alphabet (RFC 4648 §5); encoded tokens never carry `=` padding.
const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// What a reader has seen of the log: for each shard it touched, the highest LSN it saw. A query
/// with a `min_token` waits until every view has applied at least these positions
/// (read-your-writes).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Token {
    positions: BTreeMap<ShardId, Lsn>,
}

/// Why a string is not a valid token. Clients treat tokens as opaque, so these messages are for the
/// operator who has to find out how a token got mangled.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum TokenError {
    /// The text is longer than [`TOKEN_TEXT_LEN_MAX`].
    #[error("invalid token: {len} bytes long; the maximum is 65536")]
    TooLong {
        /// Length of the text in bytes.
        len: usize,
    },
    /// The text does not start with a version prefix such as `t1.`.
    #[error("invalid token: must start with \"t1.\"")]
    MissingVersion,
    /// The text starts with a version this build does not read.
    #[error("invalid token: version {version:?} is not supported; this build reads \"t1\"")]
    UnsupportedVersion {
        /// The version as written (cut to a few characters).
        version: String,
    },
    /// The body has a character outside the URL-safe base64 alphabet.
    #[error("invalid token: {ch:?} at column {column} is not url-safe base64 (A-Z a-z 0-9 - _)")]
    Base64Char {
        /// The first offending character.
        ch: char,
        /// Its 1-based column in the token.
        column: usize,
    },
    /// The body length is impossible for unpadded base64 (one character too many or too few).
    #[error(
        "invalid token: a base64 body of {len} characters is impossible; the token was truncated"
    )]
    Base64Length {
        /// Length of the body in characters.
        len: usize,
    },
    /// The last base64 character has bits set that encode nothing, so it was not written by
    /// [`Token::encode`].
    #[error(
        "invalid token: the last character at column {column} has stray bits; the token was altered"
    )]
    Base64Trailing {
        /// 1-based column of the last character.
        column: usize,
    },
    /// The body decodes to fewer bytes than the checksum alone.
    #[error(
        "invalid token: {len} bytes is shorter than the 4-byte checksum; the token was truncated"
    )]
    TooShort {
        /// Decoded length in bytes.
        len: usize,
    },
    /// The checksum does not match the positions.
    #[error(
        "invalid token: checksum mismatch (stored {stored:08x}, computed {computed:08x}); \
         the token was altered or truncated"
    )]
    Checksum {
        /// The checksum the token carries.
        stored: u32,
        /// The checksum of the positions it carries.
        computed: u32,
    },
    /// A varint is cut off, overflows 64 bits, or is not in its shortest form.
    #[error("invalid token: malformed varint at byte {offset} of the positions")]
    Varint {
        /// Byte offset of the varint in the decoded positions.
        offset: usize,
    },
    /// A shard id does not fit in 32 bits.
    #[error("invalid token: shard {shard} at byte {offset} of the positions exceeds 4294967295")]
    ShardRange {
        /// The decoded shard id.
        shard: u64,
        /// Byte offset of the shard id in the decoded positions.
        offset: usize,
    },
    /// Shards are not strictly ascending (a repeated or out-of-order shard).
    #[error(
        "invalid token: shard {shard} at byte {offset} of the positions follows shard {previous}; \
         shards must be strictly ascending"
    )]
    ShardOrder {
        /// The out-of-order shard.
        shard: u32,
        /// The shard before it.
        previous: u32,
        /// Byte offset of the shard id in the decoded positions.
        offset: usize,
    },
}

impl TokenError {
    /// The stable problem+json `code` for every token error.
    pub fn code(&self) -> &'static str {
        "invalid_token"
    }
}

impl Token {
    /// The empty token: it has seen nothing, and every token covers it.
    pub fn new() -> Token {
        Token::default()
    }

    /// The token that has seen exactly `position`.
    pub fn from_position(position: Position) -> Token {
        let mut token = Token::new();
        token.observe(position);
        token
    }

    /// Records `position`, keeping the higher LSN if the shard is already present.
    pub fn observe(&mut self, position: Position) {
        let lsn = self.positions.entry(position.shard).or_insert(position.lsn);
        *lsn = (*lsn).max(position.lsn);
    }

    /// Records every position of `other` (the least upper bound of the two tokens).
    pub fn merge(&mut self, other: &Token) {
        for position in other.iter() {
            self.observe(position);
        }
    }

    /// Whether this token has seen everything `other` has: every shard of `other` is present here
    /// with an LSN at least as high.
    pub fn covers(&self, other: &Token) -> bool {
        other
            .positions
            .iter()
            .all(|(shard, lsn)| self.get(*shard).is_some_and(|ours| ours >= *lsn))
    }

    /// The LSN seen for `shard`, if any.
    pub fn get(&self, shard: ShardId) -> Option<Lsn> {
        self.positions.get(&shard).copied()
    }

    /// The positions, in ascending shard order.
    pub fn iter(&self) -> impl Iterator<Item = Position> + '_ {
        self.positions
            .iter()
            .map(|(shard, lsn)| Position::new(*shard, *lsn))
    }

    /// Whether the token holds no position.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The number of shards the token holds a position for.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// The text form: `t1.` followed by unpadded URL-safe base64 of the positions and a checksum.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(self.positions.len() * 6 + CHECKSUM_LEN);
        for (shard, lsn) in &self.positions {
            put_varint(&mut bytes, u64::from(shard.0));
            put_varint(&mut bytes, lsn.0);
        }
        let checksum = crc32c(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        let mut text = String::with_capacity(TOKEN_PREFIX.len() + bytes.len().div_ceil(3) * 4);
        text.push_str(TOKEN_PREFIX);
        base64_encode(&bytes, &mut text);
        debug_assert!(
            text.len() <= TOKEN_TEXT_LEN_MAX,
            "token of {} bytes",
            text.len()
        );
        text
    }

    /// Parses a token written by [`Token::encode`]. Anything else, including a token with one
    /// character changed, is rejected.
    pub fn decode(text: &str) -> Result<Token, TokenError> {
        if text.len() > TOKEN_TEXT_LEN_MAX {
            return Err(TokenError::TooLong { len: text.len() });
        }
        let Some(body) = text.strip_prefix(TOKEN_PREFIX) else {
            return Err(version_error(text));
        };
        let bytes = base64_decode(body, TOKEN_PREFIX.len())?;
        if bytes.len() < CHECKSUM_LEN {
            return Err(TokenError::TooShort { len: bytes.len() });
        }
        let (payload, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        let stored =
            u32::from_le_bytes(checksum.try_into().expect("split at 4 bytes from the end"));
        let computed = crc32c(payload);
        if stored != computed {
            return Err(TokenError::Checksum { stored, computed });
        }
        let mut token = Token::new();
        let mut offset = 0;
        let mut previous: Option<u32> = None;
        while offset < payload.len() {
            let shard_at = offset;
            let shard = get_varint(payload, &mut offset)?;
            let shard = u32::try_from(shard).map_err(|_| TokenError::ShardRange {
                shard,
                offset: shard_at,
            })?;
            if let Some(previous) = previous.filter(|p| *p >= shard) {
                return Err(TokenError::ShardOrder {
                    shard,
                    previous,
                    offset: shard_at,
                });
            }
            previous = Some(shard);
            let lsn = get_varint(payload, &mut offset)?;
            token.positions.insert(ShardId(shard), Lsn(lsn));
        }
        Ok(token)
    }
}

impl From<Position> for Token {
    fn from(position: Position) -> Token {
        Token::from_position(position)
    }
}

impl FromIterator<Position> for Token {
    /// The token that has seen all `positions` (the highest LSN per shard wins).
    fn from_iter<I: IntoIterator<Item = Position>>(positions: I) -> Token {
        let mut token = Token::new();
        positions.into_iter().for_each(|p| token.observe(p));
        token
    }
}

impl fmt::Display for Token {
    /// The text encoding, as [`Token::encode`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Token, TokenError> {
        Token::decode(s)
    }
}

impl Serialize for Token {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Token, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Token::decode(&text).map_err(serde::de::Error::custom)
    }
}

/// Tells a token from a future version (`t2.…`) apart from text that is no token at all.
fn version_error(text: &str) -> TokenError {
    let version = text.split_once('.').map(|(v, _)| v).filter(|v| {
        v.len() >= 2
            && v.len() <= 8
            && v.starts_with('t')
            && v[1..].bytes().all(|b| b.is_ascii_digit())
    });
    match version {
        Some(version) => TokenError::UnsupportedVersion {
            version: version.to_owned(),
        },
        None => TokenError::MissingVersion,
    }
}

/// Appends `value` as an unsigned LEB128 varint (7 bits per byte, low bits first).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads the varint at `*offset`, advancing it; only the shortest encoding of a value is accepted,
/// which keeps the text form of a token unique.
pub(crate) fn get_varint(bytes: &[u8], offset: &mut usize) -> Result<u64, TokenError> {
    let start = *offset;
    let mut value = 0u64;
    for (i, &byte) in bytes[start..].iter().enumerate() {
        let shift = 7 * i as u32;
        let bits = u64::from(byte & 0x7f);
        // The tenth byte may only carry the single remaining bit of a u64.
        if shift >= 64 || (shift == 63 && bits > 1) {
            break;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            // A zero last byte after the first adds nothing: a longer encoding of a smaller value.
            if byte == 0 && i > 0 {
                break;
            }
            *offset = start + i + 1;
            return Ok(value);
        }
    }
    Err(TokenError::Varint { offset: start })
}

pub(crate) fn base64_encode(bytes: &[u8], out: &mut String) {
    let symbol = |index: u32| char::from(BASE64_ALPHABET[(index & 0x3f) as usize]);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let group = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        // n input bytes give n + 1 output characters; the rest of the 4 would be padding.
        for i in 0..=chunk.len() {
            out.push(symbol(group >> (18 - 6 * i)));
        }
    }
}

/// Decodes unpadded URL-safe base64. `column_base` is the number of characters before `text` in the
/// token, so errors point at the column the client sees.
pub(crate) fn base64_decode(text: &str, column_base: usize) -> Result<Vec<u8>, TokenError> {
    if let Some((offset, ch)) = text
        .char_indices()
        .find(|&(_, c)| base64_value(c).is_none())
    {
        // Every character before `offset` is ASCII, so the byte offset is also the column - 1.
        return Err(TokenError::Base64Char {
            ch,
            column: column_base + offset + 1,
        });
    }
    if text.len() % 4 == 1 {
        return Err(TokenError::Base64Length { len: text.len() });
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.as_bytes().chunks(4) {
        let mut group = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let value = base64_value(char::from(c)).expect("alphabet checked above");
            group |= u32::from(value) << (18 - 6 * i);
        }
        let bytes = group.to_be_bytes();
        let len = chunk.len() - 1;
        // The bits below the last whole byte must be zero, or two texts would decode alike.
        if group & (0x00ff_ffff >> (8 * len)) != 0 {
            return Err(TokenError::Base64Trailing {
                column: column_base + text.len(),
            });
        }
        out.extend_from_slice(&bytes[1..=len]);
    }
    Ok(out)
}

fn base64_value(c: char) -> Option<u8> {
    let value = match c {
        'A'..='Z' => c as u32 - 'A' as u32,
        'a'..='z' => c as u32 - 'a' as u32 + 26,
        '0'..='9' => c as u32 - '0' as u32 + 52,
        '-' => 62,
        '_' => 63,
        _ => return None,
    };
    Some(value as u8)
}

/// CRC-32C (Castagnoli), bit by bit: tokens are a few bytes long, so a table would only add code.
/// The same checksum as the storage frames; it detects every error burst of up to 32 bits, so a
/// token with one character changed is always rejected.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82f6_3b78 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests;
