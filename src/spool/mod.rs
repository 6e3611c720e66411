//! Spool: the durable log between the receiver and the assembler.
//!
//! The receiver appends each request's checked spans here and answers the
//! sender only once the append is on disk ([`Spool::append`] returns after
//! `fdatasync`). Appends of concurrent requests share one sync (group
//! commit). Records live in append-only segment files (mode 0600 in a 0700
//! directory); each record and each span in it carries a CRC-32. The
//! assembler keeps only the [`Location`] of a waiting span and reads its body
//! back when the workflow is complete. A span's location is released once
//! ClickHouse confirmed every row written for it; segments are deleted oldest
//! first once nothing in them is live. On start, [`Spool::open`] checks every
//! record: a torn record at the tail of the newest segment is cut off, and a
//! corrupt record elsewhere is moved aside into `corrupt/` and reported.

mod record;
mod replay;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use record::RejectedEntry;
pub use replay::{RecordPosition, Repairs, ReplayRecord};

use crate::config::SpoolConfig;

/// Bytes between two spans that [`Spool::read_many`] reads and discards
/// to read both at once: about a record's framing, not whole spans of
/// other traces.
const READ_GAP: u64 = 64;
/// Largest single read of [`Spool::read_many`].
const READ_RUN: u64 = 1 << 20;

/// Returns `body` when its CRC-32 is the one recorded in `location`.
fn check_crc<B: AsRef<[u8]>>(location: &Location, body: B) -> Result<B, SpoolError> {
    if crc32fast::hash(body.as_ref()) != location.crc {
        return Err(SpoolError::Corrupt {
            segment: location.segment,
            offset: location.offset,
            what: "span checksum does not match".to_owned(),
        });
    }
    Ok(body)
}

/// Where one span's bytes are in the spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

/// A spool failure.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The disk budget is used up until ClickHouse confirms older spans.
    #[error("the spool is full ({used} of {max} bytes); retry once ClickHouse has caught up")]
    Full { used: u64, max: u64 },
    #[error("spool I/O failed on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool record at segment {segment} offset {offset} is corrupt: {what}")]
    Corrupt {
        segment: u64,
        offset: u64,
        what: String,
    },
    #[error("the spool writer has stopped")]
    Stopped,
}

impl SpoolError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        SpoolError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// What an append stored, in the order given.
#[derive(Debug, Default)]
pub struct Appended {
    pub spans: Vec<Location>,
    pub rejected: Vec<Location>,
}

/// Counters and gauges the spool reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpoolStats {
    pub bytes: u64,
    pub segments: usize,
    pub live_entries: u64,
    pub oldest_live_age: Duration,
    pub fsyncs: u64,
}

struct SegmentInfo {
    bytes: u64,
    live: u64,
    /// Bytes of the live entries' bodies.
    live_bytes: u64,
    created: Instant,
}

/// State shared by the writer thread, the appenders and the trimmer.
struct Shared {
    dir: PathBuf,
    segments: BTreeMap<u64, SegmentInfo>,
    current: u64,
    total_bytes: u64,
    /// Bytes of every segment's live entry bodies: what ClickHouse has not
    /// confirmed yet. It falls span by span, unlike `total_bytes`, which
    /// falls only when a whole segment is deleted.
    live_bytes: u64,
    fsyncs: u64,
}

impl Shared {
    fn segment_path(&self, id: u64) -> PathBuf {
        segment_path(&self.dir, id)
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// The spool.
pub struct Spool {
    config: SpoolConfig,
    shared: Arc<Mutex<Shared>>,
    writer: Mutex<Option<std::sync::mpsc::Sender<writer::AppendRequest>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
}

impl Spool {
    /// Opens the spool directory, checks and repairs existing segments, and
    /// starts the writer. Returns the spool, the records to replay in order,
    /// and what was repaired.
    pub fn open(
        config: &SpoolConfig,
    ) -> Result<(Arc<Spool>, Vec<RecordPosition>, Repairs), SpoolError> {
        let dir = config.dir.clone();
        create_private_dir(&dir)?;
        let scan = replay::scan(&dir)?;
        let next_id = scan.segments.keys().next_back().map_or(1, |id| id + 1);
        let mut segments = BTreeMap::new();
        let mut total_bytes = 0;
        let mut live_bytes = 0;
        for (id, (bytes, live)) in &scan.segments {
            segments.insert(
                *id,
                SegmentInfo {
                    bytes: *bytes,
                    live: live.entries,
                    live_bytes: live.bytes,
                    created: Instant::now(),
                },
            );
            total_bytes += bytes;
            live_bytes += live.bytes;
        }
        let shared = Arc::new(Mutex::new(Shared {
            dir: dir.clone(),
            segments,
            current: next_id,
            total_bytes,
            live_bytes,
            fsyncs: 0,
        }));
        let (sender, thread) = writer::start(config, shared.clone(), next_id)?;
        let spool = Spool {
            config: config.clone(),
            shared,
            writer: Mutex::new(Some(sender)),
            writer_thread: Mutex::new(Some(thread)),
            files: Mutex::new(HashMap::new()),
        };
        Ok((Arc::new(spool), scan.records, scan.repairs))
    }

    /// Appends spans and quarantined spans of one request and waits until
    /// they are on disk.
    pub async fn append(
        &self,
        received_at: i64,
        sender: &str,
        spans: &[&[u8]],
        rejected: &[RejectedEntry],
    ) -> Result<Appended, SpoolError> {
        self.check_budget()?;
        let encoded = record::encode(received_at, sender, spans, rejected);
        let (reply, done) = oneshot::channel();
        let request = writer::AppendRequest { encoded, reply };
        let sent = match self.writer.lock().unwrap().as_ref() {
            Some(writer) => writer.send(request).is_ok(),
            None => false,
        };
        if !sent {
            return Err(SpoolError::Stopped);
        }
        done.await.map_err(|_| SpoolError::Stopped)?
    }

    fn check_budget(&self) -> Result<(), SpoolError> {
        let used = self.shared.lock().unwrap().total_bytes;
        let max = self.config.max_bytes.as_u64();
        if used >= max {
            return Err(SpoolError::Full { used, max });
        }
        Ok(())
    }

    /// Reads one span's bytes back and checks them.
    pub fn read(&self, location: &Location) -> Result<Vec<u8>, SpoolError> {
        let bytes = self.read_at(location.segment, location.offset, location.len as usize)?;
        check_crc(location, bytes)
    }

    /// Reads the bodies at `locations`, in the same order. Spans that lie
    /// close together in one segment (the spans of one request usually do)
    /// are read with one system call into one buffer, which their bodies
    /// then share. A failed read of such a run is retried span by span, so
    /// one bad location fails only its own span.
    pub fn read_many(&self, locations: &[Location]) -> Vec<Result<bytes::Bytes, SpoolError>> {
        let mut order: Vec<usize> = (0..locations.len()).collect();
        order.sort_by_key(|&index| (locations[index].segment, locations[index].offset));
        let mut results: Vec<Option<Result<bytes::Bytes, SpoolError>>> =
            (0..locations.len()).map(|_| None).collect();
        let mut start = 0;
        while start < order.len() {
            let first = locations[order[start]];
            let mut end = start + 1;
            let mut run_end = first.offset + u64::from(first.len);
            while end < order.len() {
                let next = locations[order[end]];
                let next_end = next.offset + u64::from(next.len);
                let joins = next.segment == first.segment
                    && next.offset >= first.offset
                    && next.offset <= run_end + READ_GAP
                    && next_end - first.offset <= READ_RUN;
                if !joins {
                    break;
                }
                run_end = run_end.max(next_end);
                end += 1;
            }
            let run = &order[start..end];
            let run_len = (run_end - first.offset) as usize;
            match self.read_at(first.segment, first.offset, run_len) {
                Ok(buffer) => {
                    let buffer = bytes::Bytes::from(buffer);
                    for &index in run {
                        let location = &locations[index];
                        let from = (location.offset - first.offset) as usize;
                        let body = buffer.slice(from..from + location.len as usize);
                        results[index] = Some(check_crc(location, body));
                    }
                }
                Err(_) => {
                    for &index in run {
                        let body = self.read(&locations[index]).map(bytes::Bytes::from);
                        results[index] = Some(body);
                    }
                }
            }
            start = end;
        }
        results
            .into_iter()
            .map(|result| result.expect("every location is read"))
            .collect()
    }

    /// Reads `len` bytes at `offset` of a segment file.
    fn read_at(&self, segment: u64, offset: u64, len: usize) -> Result<Vec<u8>, SpoolError> {
        let file = self.file(segment)?;
        let mut bytes = vec![0; len];
        let path = segment_path(&self.config.dir, segment);
        file.read_exact_at(&mut bytes, offset)
            .map_err(|source| SpoolError::io(&path, source))?;
        Ok(bytes)
    }

    /// Reads one whole record found by [`Spool::open`].
    pub fn read_record(&self, position: &RecordPosition) -> Result<ReplayRecord, SpoolError> {
        let bytes = self.read_at(position.segment, position.offset, position.len)?;
        replay::decode_record(position, &bytes)
    }

    fn file(&self, segment: u64) -> Result<Arc<File>, SpoolError> {
        let mut files = self.files.lock().unwrap();
        if let Some(file) = files.get(&segment) {
            return Ok(file.clone());
        }
        let path = segment_path(&self.config.dir, segment);
        let file = Arc::new(File::open(&path).map_err(|source| SpoolError::io(&path, source))?);
        files.insert(segment, file.clone());
        Ok(file)
    }

    /// Marks spans as no longer needed: stored in ClickHouse, dropped as
    /// duplicates, or copied forward.
    pub fn release(&self, locations: impl IntoIterator<Item = Location>) {
        let mut shared = self.shared.lock().unwrap();
        let mut released_bytes = 0;
        for location in locations {
            if let Some(segment) = shared.segments.get_mut(&location.segment) {
                segment.live = segment.live.saturating_sub(1);
                let len = u64::from(location.len).min(segment.live_bytes);
                segment.live_bytes -= len;
                released_bytes += len;
            }
        }
        shared.live_bytes = shared.live_bytes.saturating_sub(released_bytes);
    }

    /// Deletes the oldest segments that hold nothing live; returns how many.
    pub fn trim(&self) -> usize {
        let removable = self.take_removable();
        for (id, path) in &removable {
            self.files.lock().unwrap().remove(id);
            if let Err(error) = std::fs::remove_file(path) {
                tracing::error!(path = %path.display(), %error, "deleting a confirmed spool segment failed; it is retried at the next start");
            }
        }
        removable.len()
    }

    fn take_removable(&self) -> Vec<(u64, PathBuf)> {
        let mut shared = self.shared.lock().unwrap();
        let mut removable = Vec::new();
        while let Some((&id, info)) = shared.segments.iter().next() {
            if id == shared.current || info.live > 0 {
                break;
            }
            let (bytes, live_bytes) = (info.bytes, info.live_bytes);
            shared.segments.remove(&id);
            shared.total_bytes -= bytes;
            shared.live_bytes = shared.live_bytes.saturating_sub(live_bytes);
            removable.push((id, shared.segment_path(id)));
        }
        removable
    }

    /// Segments older than `compact_after` whose remaining live spans should
    /// be copied forward, oldest first.
    pub fn segments_to_compact(&self) -> Vec<u64> {
        let shared = self.shared.lock().unwrap();
        shared
            .segments
            .iter()
            .filter(|(id, info)| **id != shared.current && info.live > 0)
            .filter(|(_, info)| info.created.elapsed() >= self.config.compact_after)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Bytes the spool's segments take, against [`Spool::max_bytes`].
    pub fn bytes(&self) -> u64 {
        self.shared.lock().unwrap().total_bytes
    }

    /// Bytes of the span bodies not yet released. Unlike [`Spool::bytes`]
    /// it falls with every confirmation, not only when a whole segment is
    /// deleted.
    pub fn live_bytes(&self) -> u64 {
        self.shared.lock().unwrap().live_bytes
    }

    /// Returns the disk budget, beyond which appends fail with
    /// [`SpoolError::Full`].
    pub fn max_bytes(&self) -> u64 {
        self.config.max_bytes.as_u64()
    }

    /// Current figures, for metrics.
    pub fn stats(&self) -> SpoolStats {
        let shared = self.shared.lock().unwrap();
        let oldest_live_age = shared
            .segments
            .values()
            .find(|info| info.live > 0)
            .map(|info| info.created.elapsed())
            .unwrap_or_default();
        SpoolStats {
            bytes: shared.total_bytes,
            segments: shared.segments.len(),
            live_entries: shared.segments.values().map(|info| info.live).sum(),
            oldest_live_age,
            fsyncs: shared.fsyncs,
        }
    }

    /// Stops the writer after the appends already queued.
    pub fn close(&self) {
        self.writer.lock().unwrap().take();
        if let Some(thread) = self.writer_thread.lock().unwrap().take() {
            let _ = thread.join();
        }
    }
}

/// Creates `dir` with mode 0700 if needed and tightens an existing one.
fn create_private_dir(dir: &Path) -> Result<(), SpoolError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| SpoolError::io(dir, source))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|source| SpoolError::io(dir, source))
}
