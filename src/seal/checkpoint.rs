//! Checkpoints: signed statements of how far an instance's ledger reached.
//!
//! Takes the range of ledger entries written since the previous checkpoint
//! and produces the signed message, the `agent_ledger_checkpoints` row and a
//! JSON file kept outside ClickHouse. The signed message is UTF-8 text, one
//! `name=value` line each, every line ending in a line feed:
//!
//! ```text
//! agent-ledger checkpoint v1
//! instance_id=ledger-a
//! first_seq=1
//! last_seq=42
//! last_entry_hash=<64 lower-case hex digits>
//! signed_at=<Unix nanoseconds>
//! key_id=<16 hex digits>
//! ```
//!
//! The signature is Ed25519 (RFC 8032, pure, no prehash) over those bytes,
//! stored as base64. `docs/sealing.md` shows how to check it with openssl.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::keys::{CheckpointSigner, PublicKey};
use crate::clickhouse::rows::CheckpointRow;

/// First line of the signed message; names the format version.
pub const MESSAGE_HEADER: &str = "agent-ledger checkpoint v1";

/// The signed message of `row` (its signature field aside).
pub fn message(row: &CheckpointRow) -> String {
    format!(
        "{MESSAGE_HEADER}\ninstance_id={}\nfirst_seq={}\nlast_seq={}\nlast_entry_hash={}\nsigned_at={}\nkey_id={}\n",
        row.instance_id,
        row.first_seq,
        row.last_seq,
        row.last_entry_hash,
        row.signed_at,
        row.key_id
    )
}

/// Fills `key_id` and `signature` of `row`; leaves them empty without a key.
pub fn sign(row: &mut CheckpointRow, signer: Option<&CheckpointSigner>) {
    let Some(signer) = signer else {
        row.key_id.clear();
        row.signature.clear();
        return;
    };
    row.key_id = signer.key_id().to_owned();
    let signature = signer.sign(message(row).as_bytes());
    row.signature = base64::engine::general_purpose::STANDARD.encode(signature);
}

/// How a checkpoint's signature checks out against the given keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    Valid,
    /// Signed, but no public key was given at all.
    NotChecked,
    Unsigned,
    /// No given public key has the checkpoint's key id.
    UnknownKey,
    Invalid,
}

/// Checks `row`'s signature against `keys`.
pub fn check_signature(row: &CheckpointRow, keys: &[PublicKey]) -> SignatureCheck {
    if row.signature.is_empty() {
        return SignatureCheck::Unsigned;
    }
    if keys.is_empty() {
        return SignatureCheck::NotChecked;
    }
    let Some(key) = keys.iter().find(|key| key.key_id == row.key_id) else {
        return SignatureCheck::UnknownKey;
    };
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(&row.signature) else {
        return SignatureCheck::Invalid;
    };
    if key.verifies(message(row).as_bytes(), &signature) {
        SignatureCheck::Valid
    } else {
        SignatureCheck::Invalid
    }
}

/// A checkpoint as written to the checkpoint folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointFile {
    pub instance_id: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_entry_hash: String,
    /// Unix nanoseconds, as signed.
    pub signed_at: i64,
    /// The same time in RFC 3339, for people.
    pub signed_at_rfc3339: String,
    pub key_id: String,
    pub signature: String,
    /// The exact signed message.
    pub message: String,
}

impl CheckpointFile {
    pub fn new(row: &CheckpointRow) -> Self {
        CheckpointFile {
            instance_id: row.instance_id.clone(),
            first_seq: row.first_seq,
            last_seq: row.last_seq,
            last_entry_hash: row.last_entry_hash.clone(),
            signed_at: row.signed_at,
            signed_at_rfc3339: rfc3339(row.signed_at),
            key_id: row.key_id.clone(),
            signature: row.signature.clone(),
            message: message(row),
        }
    }

    /// The checkpoint as a table row.
    pub fn to_row(&self) -> CheckpointRow {
        CheckpointRow {
            instance_id: self.instance_id.clone(),
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            last_entry_hash: self.last_entry_hash.clone(),
            signed_at: self.signed_at,
            key_id: self.key_id.clone(),
            signature: self.signature.clone(),
        }
    }
}

/// A checkpoint file that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointFileError {
    #[error("cannot write checkpoint file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read checkpoint folder {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read checkpoint file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid checkpoint file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The file name of a checkpoint: instance id (with characters other than
/// letters, digits, `-`, `_` and `.` replaced by `_`) and last sequence
/// number, zero-padded so that names sort in sequence order.
pub fn file_name(row: &CheckpointRow) -> String {
    let instance: String = row
        .instance_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("checkpoint-{instance}-{:020}.json", row.last_seq)
}

/// Writes `row` as JSON into `dir` (created if missing), through a temporary
/// file and a rename so that a reader never sees half a file.
pub fn write_file(dir: &Path, row: &CheckpointRow) -> Result<PathBuf, CheckpointFileError> {
    let path = dir.join(file_name(row));
    let error = |source| CheckpointFileError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(error)?;
    let text = serde_json::to_string_pretty(&CheckpointFile::new(row))
        .expect("a checkpoint serializes to JSON");
    let temporary = dir.join(format!(".{}.tmp", file_name(row)));
    std::fs::write(&temporary, text + "\n").map_err(error)?;
    std::fs::rename(&temporary, &path).map_err(error)?;
    Ok(path)
}

/// Reads every `checkpoint-*.json` file in `dir`, in name order.
pub fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, CheckpointFile)>, CheckpointFileError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CheckpointFileError::ReadDir {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default();
            name.starts_with("checkpoint-") && name.ends_with(".json")
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(&path).map_err(|source| CheckpointFileError::Read {
                    path: path.clone(),
                    source,
                })?;
            let file =
                serde_json::from_str(&text).map_err(|source| CheckpointFileError::Parse {
                    path: path.clone(),
                    source,
                })?;
            Ok((path, file))
        })
        .collect()
}

/// Unix nanoseconds as RFC 3339 UTC.
pub fn rfc3339(unix_nano: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(unix_nano)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> CheckpointRow {
        CheckpointRow {
            instance_id: "ledger-a".to_owned(),
            first_seq: 1,
            last_seq: 42,
            last_entry_hash: "ab".repeat(32),
            signed_at: 1_796_000_000_123_456_789,
            key_id: String::new(),
            signature: String::new(),
        }
    }

    #[test]
    fn message_lists_every_field() {
        let text = message(&row());
        let expected = format!(
            "agent-ledger checkpoint v1\ninstance_id=ledger-a\nfirst_seq=1\nlast_seq=42\nlast_entry_hash={}\nsigned_at=1796000000123456789\nkey_id=\n",
            "ab".repeat(32)
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn file_names_sort_by_sequence() {
        let mut first = row();
        first.last_seq = 9;
        let second = row();
        assert!(file_name(&first) < file_name(&second));
        assert_eq!(
            file_name(&second),
            "checkpoint-ledger-a-00000000000000000042.json"
        );
    }

    #[test]
    fn file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), &row()).unwrap();
        let files = read_dir(dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, path);
        assert_eq!(files[0].1.to_row(), row());
    }
}
