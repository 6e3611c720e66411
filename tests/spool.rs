//! The spool on its own: durability of appends, recovery of a torn tail,
//! corrupt records moved aside, the disk budget, and deletion of confirmed
//! segments.

use std::path::Path;
use std::time::Duration;

use agent_ledger::config::SpoolConfig;
use agent_ledger::quarantine::Reason;
use agent_ledger::spool::{RejectedEntry, Spool, SpoolError};
use bytesize::ByteSize;

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_owned(),
        max_bytes: ByteSize::mib(64),
        segment_bytes: ByteSize::kib(64),
        group_commit_interval: Duration::ZERO,
        group_commit_max_bytes: ByteSize::mib(1),
        compact_after: Duration::from_secs(60),
    }
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

async fn append_spans(spool: &Spool, spans: &[&[u8]]) -> Vec<agent_ledger::spool::Location> {
    spool
        .append(7, "sender-a", spans, &[])
        .await
        .expect("append succeeds")
        .spans
}

#[tokio::test]
async fn appended_spans_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, records, _) = Spool::open(&config(dir.path())).unwrap();
    assert!(records.is_empty());
    let locations = append_spans(&spool, &[b"first span", b"second span"]).await;
    assert_eq!(spool.read(&locations[0]).unwrap(), b"first span");
    assert_eq!(spool.read(&locations[1]).unwrap(), b"second span");
    spool.close();
}

/// Bodies read together come back in the order requested, whether they lie
/// next to each other, in other records or in other segments, and a body
/// whose checksum does not match fails alone.
#[tokio::test]
async fn bodies_read_together_match_single_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _, _) = Spool::open(&config(dir.path())).unwrap();
    let filler = vec![b'x'; 20 * 1024];
    let mut locations = append_spans(&spool, &[b"a1", b"a2", b"a3"]).await;
    // Large records fill the 64 KiB segment, so later spans land in a new one.
    for _ in 0..4 {
        append_spans(&spool, &[&filler]).await;
    }
    locations.extend(append_spans(&spool, &[b"b1", b"b2"]).await);
    assert_ne!(
        locations[0].segment, locations[4].segment,
        "the spans span two segments"
    );
    let mut corrupt = locations[1];
    corrupt.crc ^= 1;
    let requested = vec![
        locations[4],
        locations[0],
        corrupt,
        locations[2],
        locations[3],
    ];

    let bodies = spool.read_many(&requested);

    assert_eq!(bodies.len(), requested.len(), "one result per location");
    let expected: [Option<&[u8]>; 5] = [Some(b"b2"), Some(b"a1"), None, Some(b"a3"), Some(b"b1")];
    for ((body, expected), location) in bodies.iter().zip(expected).zip(&requested) {
        match expected {
            Some(expected) => {
                let body = body.as_ref().expect("the body reads back");
                assert_eq!(body.as_ref(), expected, "body at {location:?}");
                assert_eq!(
                    body.as_ref(),
                    spool.read(location).unwrap().as_slice(),
                    "same as a single read"
                );
            }
            None => assert!(
                matches!(body, Err(SpoolError::Corrupt { .. })),
                "a wrong checksum fails its own span only: {body:?}"
            ),
        }
    }
    spool.close();
}

/// Live bytes count the bodies not yet released: they fall with each
/// release while the segment files keep their size, and a reopened spool
/// counts every replayed body as live again.
#[tokio::test]
async fn live_bytes_follow_releases() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _, _) = Spool::open(&config(dir.path())).unwrap();
    let locations = append_spans(&spool, &[b"0123456789", b"01234567890123456789"]).await;
    assert_eq!(spool.live_bytes(), 30, "both bodies are live");
    let file_bytes = spool.bytes();
    assert!(file_bytes > 30, "files also hold record framing");

    spool.release([locations[0]]);
    assert_eq!(spool.live_bytes(), 20, "the released body no longer counts");
    assert_eq!(
        spool.bytes(),
        file_bytes,
        "files shrink only by whole segments"
    );
    spool.close();

    let (reopened, records, _) = Spool::open(&config(dir.path())).unwrap();
    assert_eq!(records.len(), 1, "one record replayed");
    assert_eq!(
        reopened.live_bytes(),
        30,
        "replayed bodies are live until released"
    );
    reopened.close();
}

#[tokio::test]
async fn reopened_spool_replays_records() {
    let dir = tempfile::tempdir().unwrap();
    let rejected = vec![RejectedEntry {
        reason: Reason::InvalidUtf8,
        detail: "bad key".to_owned(),
        raw: vec![1, 2, 3],
    }];
    {
        let (spool, _, _) = Spool::open(&config(dir.path())).unwrap();
        append_spans(&spool, &[b"one"]).await;
        spool
            .append(9, "sender-b", &[b"two"], &rejected)
            .await
            .unwrap();
        spool.close();
    }
    let (spool, records, repairs) = Spool::open(&config(dir.path())).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(repairs.torn_bytes, 0);
    let second = spool.read_record(&records[1]).unwrap();
    assert_eq!(second.received_at, 9);
    assert_eq!(second.sender, "sender-b");
    assert_eq!(second.spans[0].1, b"two");
    assert_eq!(second.rejected[0].1, rejected[0]);
    assert_eq!(
        spool.read(&second.spans[0].0).unwrap(),
        b"two",
        "replayed locations are readable"
    );
    spool.close();
}

#[tokio::test]
async fn torn_tail_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, _, _) = Spool::open(&config(dir.path())).unwrap();
        append_spans(&spool, &[b"kept one"]).await;
        append_spans(&spool, &[b"kept two"]).await;
        append_spans(&spool, &[b"torn by the crash"]).await;
        spool.close();
    }
    let segment = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(len - 5).unwrap();

    let (spool, records, repairs) = Spool::open(&config(dir.path())).unwrap();
    assert_eq!(records.len(), 2, "only the torn record is lost");
    assert!(repairs.torn_bytes > 0);
    assert_eq!(repairs.corrupt_records, 0);
    let spans: Vec<Vec<u8>> = records
        .iter()
        .map(|position| spool.read_record(position).unwrap().spans[0].1.clone())
        .collect();
    assert_eq!(spans, vec![b"kept one".to_vec(), b"kept two".to_vec()]);
    let after_cut = std::fs::metadata(&segment).unwrap().len();
    assert!(after_cut < len - 5, "the torn bytes are cut from the file");
    append_spans(&spool, &[b"after restart"]).await;
    spool.close();
}

#[tokio::test]
async fn corrupt_record_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let first_segment;
    {
        let (spool, _, _) = Spool::open(&config(dir.path())).unwrap();
        let first = append_spans(&spool, &[b"first record"]).await;
        append_spans(&spool, &[b"second record, to be damaged"]).await;
        append_spans(&spool, &[b"third record"]).await;
        first_segment = first[0].segment;
        spool.close();
    }
    let segment = segment_files(dir.path())
        .into_iter()
        .find(|path| {
            path.file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                == first_segment
        })
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let damaged = bytes
        .windows(6)
        .position(|window| window == b"damage")
        .unwrap();
    bytes[damaged] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let (spool, records, repairs) = Spool::open(&config(dir.path())).unwrap();
    assert_eq!(repairs.corrupt_records, 1);
    assert_eq!(
        records.len(),
        2,
        "the records around the corrupt one are replayed"
    );
    let third = spool.read_record(&records[1]).unwrap();
    assert_eq!(third.spans[0].1, b"third record");
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("corrupt"))
        .unwrap()
        .collect();
    assert_eq!(aside.len(), 1, "the corrupt record is copied aside");
    spool.close();
}

#[tokio::test]
async fn full_spool_rejects_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut small = config(dir.path());
    small.max_bytes = ByteSize::kib(64);
    let (spool, _, _) = Spool::open(&small).unwrap();
    let big = vec![7u8; 40 * 1024];
    append_spans(&spool, &[&big]).await;
    append_spans(&spool, &[&big]).await;
    let error = spool
        .append(1, "", &[&big], &[])
        .await
        .expect_err("the budget is used up");
    assert!(matches!(error, SpoolError::Full { .. }), "{error}");
    spool.close();
}

#[tokio::test]
async fn released_segments_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _, _) = Spool::open(&config(dir.path())).unwrap();
    let big = vec![1u8; 40 * 1024];
    let mut locations = Vec::new();
    for _ in 0..4 {
        locations.extend(append_spans(&spool, &[&big]).await);
    }
    let before = segment_files(dir.path()).len();
    assert!(before >= 3, "records rotate into new segments");
    spool.release(locations[..2].iter().copied());
    let deleted = spool.trim();
    assert!(
        deleted >= 1,
        "segments holding only released spans are deleted"
    );
    assert!(segment_files(dir.path()).len() < before);
    assert_eq!(
        spool.read(&locations[3]).unwrap(),
        big,
        "live spans stay readable"
    );
    spool.close();
}

#[tokio::test]
async fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let (spool, _, _) = Spool::open(&config(&spool_dir)).unwrap();
    append_spans(&spool, &[b"secret-free but private"]).await;
    let mode = std::fs::metadata(&spool_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    for file in segment_files(&spool_dir) {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    spool.close();
}
