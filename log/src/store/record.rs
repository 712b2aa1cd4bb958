//! The durable form of one Raft entry in a shard's `log` table: a checksummed frame holding the
//! entry's log id, the chain hash of its predecessor and its payload. Layout in
//! `docs/design/log-format.md`.
//!
//! Invariant: `chain(entry) = xxh3_128(prev_chain || body)`, where `body` is every byte of the
//! record after the `prev` field; two replicas whose last chains are equal hold equal logs.

use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership};

use crate::codec::{DecodeError, Reader, Writer};
use crate::entry::Proposal;
use crate::raft::{Entry, TypeConfig};

/// The 128-bit chain hash of a log prefix.
pub type Chain = [u8; 16];

/// The chain of the empty log.
pub const GENESIS: Chain = [0; 16];

const RECORD_VERSION: u8 = 1;
const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;

/// Extends `prev` by one record body.
pub fn extend_chain(prev: &Chain, body: &[u8]) -> Chain {
    let mut input = Vec::with_capacity(16 + body.len());
    input.extend_from_slice(prev);
    input.extend_from_slice(body);
    xxhash_rust::xxh3::xxh3_128(&input).to_le_bytes()
}

/// Encodes `entry` after a predecessor whose chain is `prev`. Returns the framed record and
/// the entry's own chain.
pub fn encode(entry: &Entry, prev: &Chain) -> (Vec<u8>, Chain) {
    let mut body = Writer::with_capacity(64);
    body.u64(entry.log_id.leader_id.term);
    body.u64(entry.log_id.leader_id.node_id);
    body.u64(entry.log_id.index);
    match &entry.payload {
        EntryPayload::Blank => body.u8(KIND_BLANK),
        EntryPayload::Normal(proposal) => {
            body.u8(KIND_NORMAL);
            body.raw(&proposal.encode());
        }
        EntryPayload::Membership(membership) => {
            body.u8(KIND_MEMBERSHIP);
            body.raw(&serde_json::to_vec(membership).expect("membership serializes"));
        }
    }
    let body = body.into_bytes();
    let chain = extend_chain(prev, &body);
    let mut record = Writer::with_capacity(1 + 16 + body.len());
    record.u8(RECORD_VERSION);
    record.raw(prev);
    record.raw(&body);
    (themis_storage::seal_frame(&record.into_bytes()), chain)
}

/// The chain of a stored record, computed from its raw bytes without decoding the entry. The
/// caller has verified the record (at open, or by writing it); a short frame yields genesis.
pub fn chain_of_frame(frame: &[u8]) -> Chain {
    const PREV_AT: usize = themis_storage::FRAME_OVERHEAD + 1;
    match frame.get(PREV_AT..PREV_AT + 16) {
        Some(prev) => extend_chain(prev.try_into().expect("16 bytes"), &frame[PREV_AT + 16..]),
        None => GENESIS,
    }
}

/// A decoded record.
#[derive(Debug)]
pub struct Decoded {
    /// The entry.
    pub entry: Entry,
    /// Chain of the predecessor, as stored.
    pub prev: Chain,
    /// Chain of this entry, recomputed from its bytes.
    pub chain: Chain,
}

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The frame checksum failed.
    #[error(transparent)]
    Checksum(#[from] themis_storage::Error),
    /// The bytes inside a valid frame do not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Verifies and decodes a framed record; `location` names it in errors.
pub fn decode(frame: &[u8], location: &dyn std::fmt::Display) -> Result<Decoded, RecordError> {
    let payload = themis_storage::open_frame(frame, location)?;
    let mut r = Reader::new(payload);
    let version = r.u8("record version")?;
    if version != RECORD_VERSION {
        return Err(r
            .error("record version", format!("unknown version {version}"))
            .into());
    }
    let prev: Chain = r.raw("record prev chain")?;
    let body = &payload[1 + 16..];
    let chain = extend_chain(&prev, body);
    let term = r.u64("record term")?;
    let node_id = r.u64("record leader node")?;
    let index = r.u64("record index")?;
    let log_id = LogId::new(CommittedLeaderId::new(term, node_id), index);
    let kind = r.u8("record kind")?;
    let rest = r.take(payload.len() - 1 - 16 - 25, "record payload")?;
    let payload = match kind {
        KIND_BLANK if rest.is_empty() => EntryPayload::Blank,
        KIND_NORMAL => EntryPayload::Normal(Proposal::decode(rest)?),
        KIND_MEMBERSHIP => {
            let membership: Membership<u64, openraft::BasicNode> = serde_json::from_slice(rest)
                .map_err(|e| r.error("record membership", e.to_string()))?;
            EntryPayload::Membership(membership)
        }
        other => {
            return Err(r
                .error("record kind", format!("unknown kind {other}"))
                .into());
        }
    };
    let entry = openraft::Entry::<TypeConfig> { log_id, payload };
    Ok(Decoded { entry, prev, chain })
}

#[cfg(test)]
mod tests;
