//! The writer thread: appends records to the current segment and syncs once
//! per group of requests (group commit).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::record::Encoded;
use super::{Appended, Location, SegmentInfo, Shared, SpoolError, segment_path};
use crate::config::SpoolConfig;

/// One request's record and where to send the outcome.
pub struct AppendRequest {
    pub encoded: Encoded,
    pub reply: oneshot::Sender<Result<Appended, SpoolError>>,
}

struct Segment {
    id: u64,
    file: File,
    path: PathBuf,
    len: u64,
}

struct Writer {
    shared: Arc<Mutex<Shared>>,
    segment: Segment,
    segment_bytes: u64,
    interval: Duration,
    max_group_bytes: usize,
}

/// Opens the first segment and starts the writer thread.
pub fn start(
    config: &SpoolConfig,
    shared: Arc<Mutex<Shared>>,
    first_id: u64,
) -> Result<(Sender<AppendRequest>, std::thread::JoinHandle<()>), SpoolError> {
    let segment = open_segment(&config.dir, first_id)?;
    register_segment(&shared, first_id);
    let mut writer = Writer {
        shared,
        segment,
        segment_bytes: config.segment_bytes.as_u64(),
        interval: config.group_commit_interval,
        max_group_bytes: config.group_commit_max_bytes.as_u64() as usize,
    };
    let (sender, receiver) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("spool-writer".to_owned())
        .spawn(move || writer.run(receiver))
        .map_err(|source| SpoolError::io(&config.dir, source))?;
    Ok((sender, thread))
}

fn open_segment(dir: &std::path::Path, id: u64) -> Result<Segment, SpoolError> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| SpoolError::io(&path, source))?;
    let len = file
        .metadata()
        .map_err(|source| SpoolError::io(&path, source))?
        .len();
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(|source| SpoolError::io(dir, source))?;
    Ok(Segment {
        id,
        file,
        path,
        len,
    })
}

fn register_segment(shared: &Mutex<Shared>, id: u64) {
    let mut shared = shared.lock().unwrap();
    shared.current = id;
    shared.segments.insert(
        id,
        SegmentInfo {
            bytes: 0,
            live: 0,
            live_bytes: 0,
            created: Instant::now(),
        },
    );
}

impl Writer {
    fn run(&mut self, receiver: Receiver<AppendRequest>) {
        while let Ok(first) = receiver.recv() {
            let group = self.collect_group(first, &receiver);
            self.write_group(group);
        }
        if let Err(error) = self.segment.file.sync_data() {
            tracing::error!(path = %self.segment.path.display(), %error, "final spool sync failed");
        }
    }

    /// Gathers requests until the group-commit interval has passed since the
    /// first one or the group reaches its maximum size.
    fn collect_group(
        &self,
        first: AppendRequest,
        receiver: &Receiver<AppendRequest>,
    ) -> Vec<AppendRequest> {
        let deadline = Instant::now() + self.interval;
        let mut bytes = first.encoded.bytes.len();
        let mut group = vec![first];
        while bytes < self.max_group_bytes {
            let next = match deadline.checked_duration_since(Instant::now()) {
                Some(wait) if !wait.is_zero() => match receiver.recv_timeout(wait) {
                    Ok(request) => request,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
                _ => match receiver.try_recv() {
                    Ok(request) => request,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                },
            };
            bytes += next.encoded.bytes.len();
            group.push(next);
        }
        group
    }

    fn write_group(&mut self, group: Vec<AppendRequest>) {
        let mut placed = Vec::with_capacity(group.len());
        let mut outcome = Ok(());
        for request in &group {
            match self.place(&request.encoded) {
                Ok(start) => placed.push((self.segment.id, start)),
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        if outcome.is_ok() {
            outcome = self.sync();
        }
        match outcome {
            Ok(()) => self.reply_appended(group, placed),
            Err(error) => {
                self.forget_placed(&group, &placed);
                self.reply_failed(group, &error);
            }
        }
    }

    /// Writes one record, rotating to a new segment first when it would
    /// overflow the current one; returns the record's start offset.
    fn place(&mut self, encoded: &Encoded) -> Result<u64, SpoolError> {
        let len = encoded.bytes.len() as u64;
        if self.segment.len > 0 && self.segment.len + len > self.segment_bytes {
            self.rotate()?;
        }
        let start = self.segment.len;
        if let Err(source) = self.segment.file.write_all(&encoded.bytes) {
            self.cut_back(start);
            return Err(SpoolError::io(&self.segment.path, source));
        }
        self.segment.len += len;
        let mut shared = self.shared.lock().unwrap();
        shared.total_bytes += len;
        let body_bytes: u64 = (encoded.spans.iter().chain(&encoded.rejected))
            .map(|blob| u64::from(blob.len))
            .sum();
        shared.live_bytes += body_bytes;
        if let Some(info) = shared.segments.get_mut(&self.segment.id) {
            info.bytes += len;
            info.live += (encoded.spans.len() + encoded.rejected.len()) as u64;
            info.live_bytes += body_bytes;
        }
        Ok(start)
    }

    /// Removes a partly written record so the segment stays readable.
    fn cut_back(&mut self, len: u64) {
        if let Err(error) = self.segment.file.set_len(len) {
            tracing::error!(path = %self.segment.path.display(), %error, "cutting a failed write from the spool failed; the next start cuts it off as a torn record");
        }
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        let dir = self.shared.lock().unwrap().dir.clone();
        let next = open_segment(&dir, self.segment.id + 1)?;
        register_segment(&self.shared, next.id);
        self.segment = next;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), SpoolError> {
        self.segment
            .file
            .sync_data()
            .map_err(|source| SpoolError::io(&self.segment.path, source))?;
        self.shared.lock().unwrap().fsyncs += 1;
        Ok(())
    }

    fn reply_appended(&self, group: Vec<AppendRequest>, placed: Vec<(u64, u64)>) {
        for (request, (segment, start)) in group.into_iter().zip(placed) {
            let locate = |blob: &super::record::BlobOffset| Location {
                segment,
                offset: start + blob.offset as u64,
                len: blob.len,
                crc: blob.crc,
            };
            let appended = Appended {
                spans: request.encoded.spans.iter().map(locate).collect(),
                rejected: request.encoded.rejected.iter().map(locate).collect(),
            };
            let _ = request.reply.send(Ok(appended));
        }
    }

    /// Stops counting the entries of records that reached the file but will
    /// not be acknowledged, so they do not keep their segment alive.
    fn forget_placed(&self, group: &[AppendRequest], placed: &[(u64, u64)]) {
        let mut shared = self.shared.lock().unwrap();
        for (request, (segment, _)) in group.iter().zip(placed) {
            let entries = (request.encoded.spans.len() + request.encoded.rejected.len()) as u64;
            if let Some(info) = shared.segments.get_mut(segment) {
                info.live = info.live.saturating_sub(entries);
            }
        }
    }

    /// Answers every request of a failed group with the error. Records of
    /// the group that reached the file before the failure stay there but are
    /// never acknowledged; a restart replays them, which is safe because
    /// stored spans are recognized and not stored again.
    fn reply_failed(&self, group: Vec<AppendRequest>, error: &SpoolError) {
        tracing::error!(%error, requests = group.len(), "writing to the spool failed; the requests are answered as retryable");
        for request in group {
            let copy = match error {
                SpoolError::Io { path, source } => SpoolError::Io {
                    path: path.clone(),
                    source: std::io::Error::new(source.kind(), source.to_string()),
                },
                SpoolError::Full { used, max } => SpoolError::Full {
                    used: *used,
                    max: *max,
                },
                SpoolError::Corrupt {
                    segment,
                    offset,
                    what,
                } => SpoolError::Corrupt {
                    segment: *segment,
                    offset: *offset,
                    what: what.clone(),
                },
                SpoolError::Stopped => SpoolError::Stopped,
            };
            let _ = request.reply.send(Err(copy));
        }
    }
}
