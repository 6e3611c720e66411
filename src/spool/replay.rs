//! Checking and repairing segments at start, and reading their records back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::record::{self, Invalid, RejectedEntry};
use super::{Location, SpoolError};

/// Where one valid record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPosition {
    pub segment: u64,
    pub offset: u64,
    pub len: usize,
}

/// One record read back for replay.
#[derive(Debug)]
pub struct ReplayRecord {
    pub received_at: i64,
    pub sender: String,
    pub spans: Vec<(Location, Vec<u8>)>,
    pub rejected: Vec<(Location, RejectedEntry)>,
}

/// What opening the spool repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Bytes cut from the end of the newest segment: a record whose write
    /// was interrupted, which was never acknowledged.
    pub torn_bytes: u64,
    /// Corrupt records moved into `corrupt/`.
    pub corrupt_records: usize,
    /// Valid records found.
    pub records: usize,
}

/// Entries of a segment not yet released, and their bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Live {
    pub entries: u64,
    pub bytes: u64,
}

impl Live {
    fn add_record(&mut self, decoded: &record::Decoded<'_>) {
        let spans = decoded.spans.iter().map(|(blob, _)| blob.len);
        let rejected = decoded.rejected.iter().map(|(blob, ..)| blob.len);
        self.entries += (decoded.spans.len() + decoded.rejected.len()) as u64;
        self.bytes += spans.chain(rejected).map(u64::from).sum::<u64>();
    }
}

pub struct Scan {
    /// Size, live entry count and live entry bytes of every segment.
    pub segments: BTreeMap<u64, (u64, Live)>,
    pub records: Vec<RecordPosition>,
    pub repairs: Repairs,
}

/// Checks every segment in `dir`, cutting a torn tail off the newest one and
/// moving corrupt records aside.
pub fn scan(dir: &Path) -> Result<Scan, SpoolError> {
    let ids = segment_ids(dir)?;
    let newest = ids.last().copied();
    let mut result = Scan {
        segments: BTreeMap::new(),
        records: Vec::new(),
        repairs: Repairs::default(),
    };
    for id in ids {
        let path = super::segment_path(dir, id);
        let bytes = std::fs::read(&path).map_err(|source| SpoolError::io(&path, source))?;
        let live = scan_segment(dir, id, &bytes, Some(id) == newest, &mut result)?;
        let size = std::fs::metadata(&path)
            .map_err(|source| SpoolError::io(&path, source))?
            .len();
        result.segments.insert(id, (size, live));
    }
    Ok(result)
}

fn segment_ids(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|source| SpoolError::io(dir, source))? {
        let entry = entry.map_err(|source| SpoolError::io(dir, source))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|name| name.strip_suffix(".seg")) else {
            continue;
        };
        if let Ok(id) = stem.parse::<u64>() {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Scans one segment; returns its count of entries.
fn scan_segment(
    dir: &Path,
    id: u64,
    bytes: &[u8],
    newest: bool,
    scan: &mut Scan,
) -> Result<Live, SpoolError> {
    let mut offset = 0usize;
    let mut live = Live::default();
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        match record::decode(rest) {
            Ok(decoded) => {
                let len = record::record_len(rest).unwrap_or(rest.len());
                live.add_record(&decoded);
                scan.records.push(RecordPosition {
                    segment: id,
                    offset: offset as u64,
                    len,
                });
                scan.repairs.records += 1;
                offset += len;
            }
            Err(Invalid::Truncated) if newest => {
                cut_tail(dir, id, offset as u64, rest.len() as u64)?;
                scan.repairs.torn_bytes += rest.len() as u64;
                break;
            }
            Err(invalid) => {
                let len = match (&invalid, record::record_len(rest)) {
                    (Invalid::Truncated, _) | (_, Err(_)) => rest.len(),
                    (_, Ok(len)) => len.min(rest.len()),
                };
                if newest && offset + len == bytes.len() && invalid == Invalid::Checksum {
                    cut_tail(dir, id, offset as u64, rest.len() as u64)?;
                    scan.repairs.torn_bytes += rest.len() as u64;
                    break;
                }
                move_aside(dir, id, offset as u64, &rest[..len], &invalid)?;
                scan.repairs.corrupt_records += 1;
                offset += len;
            }
        }
    }
    Ok(live)
}

fn cut_tail(dir: &Path, id: u64, keep: u64, cut: u64) -> Result<(), SpoolError> {
    let path = super::segment_path(dir, id);
    tracing::warn!(path = %path.display(), offset = keep, bytes = cut, "cutting a torn record off the spool; it was being written when the process stopped and was never acknowledged");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|source| SpoolError::io(&path, source))?;
    file.set_len(keep)
        .map_err(|source| SpoolError::io(&path, source))?;
    file.sync_all()
        .map_err(|source| SpoolError::io(&path, source))
}

/// Copies a corrupt record into `corrupt/` for inspection. Its bytes stay in
/// the segment, which the scan skips past; nothing in it is replayed.
fn move_aside(
    dir: &Path,
    id: u64,
    offset: u64,
    bytes: &[u8],
    invalid: &Invalid,
) -> Result<(), SpoolError> {
    let corrupt_dir: PathBuf = dir.join("corrupt");
    super::create_private_dir(&corrupt_dir)?;
    let path = corrupt_dir.join(format!("{id:020}-{offset:012}.rec"));
    std::fs::write(&path, bytes).map_err(|source| SpoolError::io(&path, source))?;
    tracing::error!(segment = id, offset, bytes = bytes.len(), problem = ?invalid, copy = %path.display(), "a spool record is corrupt; its spans cannot be replayed and it was copied aside");
    Ok(())
}

/// Decodes a record read back from `position`.
pub fn decode_record(position: &RecordPosition, bytes: &[u8]) -> Result<ReplayRecord, SpoolError> {
    let decoded = record::decode(bytes).map_err(|invalid| SpoolError::Corrupt {
        segment: position.segment,
        offset: position.offset,
        what: format!("{invalid:?}"),
    })?;
    let locate = |blob: &record::BlobOffset| Location {
        segment: position.segment,
        offset: position.offset + blob.offset as u64,
        len: blob.len,
        crc: blob.crc,
    };
    Ok(ReplayRecord {
        received_at: decoded.received_at,
        sender: decoded.sender.to_owned(),
        spans: decoded
            .spans
            .iter()
            .map(|(blob, bytes)| (locate(blob), bytes.to_vec()))
            .collect(),
        rejected: decoded
            .rejected
            .iter()
            .map(|(blob, reason, detail, bytes)| {
                let entry = RejectedEntry {
                    reason: *reason,
                    detail: (*detail).to_owned(),
                    raw: bytes.to_vec(),
                };
                (locate(blob), entry)
            })
            .collect(),
    })
}
