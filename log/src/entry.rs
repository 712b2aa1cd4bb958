//! The application payload of a Raft entry ([`Proposal`]: an atomic batch of events for one
//! shard and its commit timestamp) and what the state machine decided about it ([`Outcome`]).
//!
//! Invariant: a proposal's timestamp is assigned once, by the leader, when it proposes; every
//! replica applies the same bytes and therefore reaches the same outcome.

use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, Reader, Writer};
use crate::event::{Event, EventId, ExpectedRevision};
use crate::ids::Lsn;
use crate::urn::Urn;

/// Format version of an encoded proposal.
const PROPOSAL_VERSION: u8 = 1;
/// Upper bound on events read from one encoded proposal (a guard against hostile lengths).
const PROPOSAL_EVENTS_MAX: usize = 1 << 20;

/// One event of a proposal with the revision its stream must have just before it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposedEvent {
    /// The validated event.
    pub event: Event,
    /// The check against the stream's revision at this point of the batch.
    pub expected: ExpectedRevision,
    /// Whether the client chose the event's id. Only such ids enter the idempotency table: a
    /// client that let the server draw the id has no id to retry with.
    pub client_id: bool,
}

/// What one Raft entry carries: the client batches the leader group-committed together, each
/// atomic on its own, and their commit timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// Commit timestamp, milliseconds since the Unix epoch, assigned by the proposing leader.
    pub ts_ms: u64,
    /// Client batches in order; each is applied all or none, independently of the others.
    pub batches: Vec<Vec<ProposedEvent>>,
}

impl Proposal {
    /// The binary encoding stored in the log.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.events().count() * 128);
        w.u8(PROPOSAL_VERSION);
        w.varint(self.ts_ms);
        w.varint(self.batches.len() as u64);
        for batch in &self.batches {
            w.varint(batch.len() as u64);
            for e in batch {
                w.u8(u8::from(e.client_id));
                e.expected.encode(&mut w);
                e.event.encode(&mut w);
            }
        }
        w.into_bytes()
    }

    /// Decodes [`Proposal::encode`]'s output; every byte must be consumed.
    pub fn decode(bytes: &[u8]) -> Result<Proposal, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("proposal version")?;
        if version != PROPOSAL_VERSION {
            return Err(r.error("proposal version", format!("unknown version {version}")));
        }
        let ts_ms = r.varint("proposal timestamp")?;
        let batch_count = r.len("proposal batch count", PROPOSAL_EVENTS_MAX)?;
        let mut batches = Vec::with_capacity(batch_count.min(1024));
        let mut total = 0;
        for _ in 0..batch_count {
            let n = r.len("proposal event count", PROPOSAL_EVENTS_MAX - total)?;
            total += n;
            let mut events = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let client_id = match r.u8("event flags")? {
                    0 => false,
                    1 => true,
                    other => return Err(r.error("event flags", format!("unknown flags {other}"))),
                };
                let expected = ExpectedRevision::decode(&mut r)?;
                let event = Event::decode(&mut r)?;
                events.push(ProposedEvent {
                    event,
                    expected,
                    client_id,
                });
            }
            batches.push(events);
        }
        r.finish("proposal")?;
        Ok(Proposal { ts_ms, batches })
    }

    /// Every event of every batch, in log order; an event's position in this sequence is its
    /// index in the entry.
    pub fn events(&self) -> impl Iterator<Item = &ProposedEvent> {
        self.batches.iter().flatten()
    }
}

// openraft's `serde` feature asks for serde on the payload; it travels as its binary encoding,
// in text formats (JSON between nodes) as unpadded URL-safe base64: serde_json would otherwise
// write bytes as an array of numbers, three to four times larger and slow to parse.
impl Serialize for Proposal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = self.encode();
        if s.is_human_readable() {
            let mut text = String::with_capacity(bytes.len() * 4 / 3 + 4);
            crate::token::base64_encode(&bytes, &mut text);
            s.serialize_str(&text)
        } else {
            s.serialize_bytes(&bytes)
        }
    }
}

impl<'de> Deserialize<'de> for Proposal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = if d.is_human_readable() {
            let text: std::borrow::Cow<'de, str> = serde::Deserialize::deserialize(d)?;
            crate::token::base64_decode(&text, 0).map_err(serde::de::Error::custom)?
        } else {
            serde::Deserialize::deserialize(d)?
        };
        Proposal::decode(&bytes).map_err(serde::de::Error::custom)
    }
}

/// Where an accepted event sits: its entry, its index among the entry's events (all batches,
/// in order), its stream revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPosition {
    /// The entry's LSN.
    pub lsn: Lsn,
    /// Index of the event in the entry's batch.
    pub index: u32,
    /// The event's revision in its stream.
    pub revision: u64,
}

/// What the state machine decided about one client batch of an entry. Deterministic: every
/// replica decides the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The events were appended with these revisions, in batch order.
    Appended {
        /// One revision per event.
        revisions: Vec<u64>,
    },
    /// Every event id had been appended before (within the dedup window): nothing was appended
    /// and these are the original positions.
    Duplicate {
        /// One original position per event, in batch order.
        original: Vec<EventPosition>,
    },
    /// An expected-revision check failed; nothing was appended.
    WrongExpectedRevision {
        /// Index of the failing event in the batch.
        index: u32,
        /// Its stream.
        urn: Urn,
        /// What the event expected.
        expected: ExpectedRevision,
        /// The stream's revision before this batch (None: no stream).
        actual: Option<u64>,
    },
    /// Some but not all event ids were seen before, or an id was reused for another stream;
    /// nothing was appended.
    IdempotencyConflict {
        /// Index of the offending event in the batch.
        index: u32,
        /// Its id.
        id: EventId,
        /// What is inconsistent.
        reason: String,
    },
}

#[cfg(test)]
mod tests;
