//! The on-disk record format.
//!
//! A record is `length: u32 LE`, `crc32: u32 LE` (CRC-32 of the body), then
//! the body:
//!
//! ```text
//! version u8 (1) | received_at i64 LE | sender_len u16 LE | sender
//! span_count u32 LE | rejected_count u32 LE
//! span_count ×     ( len u32 LE | crc32 u32 LE | bytes )
//! rejected_count × ( reason u8 | detail_len u32 LE | detail | len u32 LE | crc32 u32 LE | bytes )
//! ```
//!
//! Each span's bytes are a protobuf `ResourceSpans` holding only that span,
//! with its resource and scope, as the receiver checked it. Every span has a
//! checksum of its own so that one span can be read back alone by its
//! [`Location`](super::Location).

use crate::quarantine::Reason;

/// Bytes before the body: length and checksum.
pub const HEADER_LEN: usize = 8;

/// Format version written in every record.
pub const VERSION: u8 = 1;

/// One span blob's position within its record's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobOffset {
    pub offset: u32,
    pub len: u32,
    pub crc: u32,
}

/// A quarantined span to spool: reason, detail and the span as received.
#[derive(Clone, Debug, PartialEq)]
pub struct RejectedEntry {
    pub reason: Reason,
    pub detail: String,
    pub raw: Vec<u8>,
}

/// An encoded record and where its blobs sit inside it.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub spans: Vec<BlobOffset>,
    pub rejected: Vec<BlobOffset>,
}

/// A decoded record.
#[derive(Debug, PartialEq)]
pub struct Decoded<'a> {
    pub received_at: i64,
    pub sender: &'a str,
    /// Blob offsets relative to the record start, with the blob bytes.
    pub spans: Vec<(BlobOffset, &'a [u8])>,
    pub rejected: Vec<(BlobOffset, Reason, &'a str, &'a [u8])>,
}

/// Encodes one record.
pub fn encode(
    received_at: i64,
    sender: &str,
    spans: &[&[u8]],
    rejected: &[RejectedEntry],
) -> Encoded {
    let sender = &sender.as_bytes()[..sender.len().min(u16::MAX as usize)];
    let size: usize = HEADER_LEN
        + 1
        + 8
        + 2
        + sender.len()
        + 8
        + spans.iter().map(|span| 8 + span.len()).sum::<usize>()
        + rejected
            .iter()
            .map(|entry| 13 + entry.detail.len() + entry.raw.len())
            .sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&[0; HEADER_LEN]);
    bytes.push(VERSION);
    bytes.extend_from_slice(&received_at.to_le_bytes());
    bytes.extend_from_slice(&(sender.len() as u16).to_le_bytes());
    bytes.extend_from_slice(sender);
    bytes.extend_from_slice(&(spans.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(rejected.len() as u32).to_le_bytes());
    let span_offsets = spans
        .iter()
        .map(|span| push_blob(&mut bytes, span))
        .collect();
    let rejected_offsets = rejected
        .iter()
        .map(|entry| {
            bytes.push(reason_code(entry.reason));
            bytes.extend_from_slice(&(entry.detail.len() as u32).to_le_bytes());
            bytes.extend_from_slice(entry.detail.as_bytes());
            push_blob(&mut bytes, &entry.raw)
        })
        .collect();
    let body_len = (bytes.len() - HEADER_LEN) as u32;
    let crc = crc32fast::hash(&bytes[HEADER_LEN..]);
    bytes[0..4].copy_from_slice(&body_len.to_le_bytes());
    bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    Encoded {
        bytes,
        spans: span_offsets,
        rejected: rejected_offsets,
    }
}

fn push_blob(bytes: &mut Vec<u8>, blob: &[u8]) -> BlobOffset {
    let crc = crc32fast::hash(blob);
    bytes.extend_from_slice(&(blob.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc.to_le_bytes());
    let offset = bytes.len() as u32;
    bytes.extend_from_slice(blob);
    BlobOffset {
        offset,
        len: blob.len() as u32,
        crc,
    }
}

fn reason_code(reason: Reason) -> u8 {
    Reason::ALL
        .iter()
        .position(|known| *known == reason)
        .unwrap_or(0) as u8
}

/// Why bytes are not a valid record.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes than the header or the length says: the record was being
    /// written when the process stopped.
    Truncated,
    /// The checksum does not match.
    Checksum,
    /// The checksum matches but the body is malformed.
    Malformed(&'static str),
}

/// The total length of the record starting at `bytes`, from its header.
pub fn record_len(bytes: &[u8]) -> Result<usize, Invalid> {
    if bytes.len() < HEADER_LEN {
        return Err(Invalid::Truncated);
    }
    let body_len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    Ok(HEADER_LEN + body_len)
}

/// Decodes the record at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, Invalid> {
    let total = record_len(bytes)?;
    if bytes.len() < total {
        return Err(Invalid::Truncated);
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    if crc32fast::hash(&bytes[HEADER_LEN..total]) != crc {
        return Err(Invalid::Checksum);
    }
    let mut cursor = Cursor {
        bytes: &bytes[..total],
        position: HEADER_LEN,
    };
    if cursor.u8()? != VERSION {
        return Err(Invalid::Malformed("unknown record version"));
    }
    let received_at = cursor.u64()? as i64;
    let sender_len = cursor.u16()? as usize;
    let sender = std::str::from_utf8(cursor.take(sender_len)?)
        .map_err(|_| Invalid::Malformed("sender is not UTF-8"))?;
    let span_count = cursor.u32()? as usize;
    let rejected_count = cursor.u32()? as usize;
    let mut spans = Vec::with_capacity(span_count.min(1 << 16));
    for _ in 0..span_count {
        spans.push(cursor.blob()?);
    }
    let mut rejected = Vec::with_capacity(rejected_count.min(1 << 16));
    for _ in 0..rejected_count {
        let reason = *Reason::ALL
            .get(cursor.u8()? as usize)
            .ok_or(Invalid::Malformed("unknown reason"))?;
        let detail_len = cursor.u32()? as usize;
        let detail = std::str::from_utf8(cursor.take(detail_len)?)
            .map_err(|_| Invalid::Malformed("detail is not UTF-8"))?;
        let (offset, blob) = cursor.blob()?;
        rejected.push((offset, reason, detail, blob));
    }
    Ok(Decoded {
        received_at,
        sender,
        spans,
        rejected,
    })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], Invalid> {
        let end = self
            .position
            .checked_add(len)
            .ok_or(Invalid::Malformed("length overflows"))?;
        let slice = self
            .bytes
            .get(self.position..end)
            .ok_or(Invalid::Malformed("field runs past the record"))?;
        self.position = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, Invalid> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Invalid> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, Invalid> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, Invalid> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn blob(&mut self) -> Result<(BlobOffset, &'a [u8]), Invalid> {
        let len = self.u32()?;
        let crc = self.u32()?;
        let offset = self.position as u32;
        let blob = self.take(len as usize)?;
        if crc32fast::hash(blob) != crc {
            return Err(Invalid::Malformed("span checksum does not match"));
        }
        Ok((BlobOffset { offset, len, crc }, blob))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Encoded {
        let rejected = vec![RejectedEntry {
            reason: Reason::InvalidUtf8,
            detail: "bad".to_owned(),
            raw: vec![9, 9],
        }];
        encode(42, "token-a", &[b"span-one", b"span-two"], &rejected)
    }

    #[test]
    fn record_round_trips() {
        let encoded = sample();
        let decoded = decode(&encoded.bytes).expect("valid record");
        assert_eq!(decoded.received_at, 42);
        assert_eq!(decoded.sender, "token-a");
        assert_eq!(decoded.spans.len(), 2);
        assert_eq!(decoded.spans[1].1, b"span-two");
        assert_eq!(decoded.spans[0].0, encoded.spans[0]);
        assert_eq!(decoded.rejected[0].1, Reason::InvalidUtf8);
        assert_eq!(decoded.rejected[0].2, "bad");
        assert_eq!(decoded.rejected[0].3, &[9, 9]);
    }

    #[test]
    fn blob_offsets_point_at_span_bytes() {
        let encoded = sample();
        let blob = encoded.spans[1];
        let bytes = &encoded.bytes[blob.offset as usize..(blob.offset + blob.len) as usize];
        assert_eq!(bytes, b"span-two");
        assert_eq!(crc32fast::hash(bytes), blob.crc);
    }

    #[test]
    fn truncated_record_detected() {
        let encoded = sample();
        let cut = &encoded.bytes[..encoded.bytes.len() - 3];
        assert_eq!(decode(cut), Err(Invalid::Truncated));
        assert_eq!(decode(&encoded.bytes[..5]), Err(Invalid::Truncated));
    }

    #[test]
    fn flipped_bit_detected() {
        let mut bytes = sample().bytes;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        assert_eq!(decode(&bytes), Err(Invalid::Checksum));
    }
}
