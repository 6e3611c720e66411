//! The token file: a YAML list of `{name, sha256}` entries, the lower-case
//! hex SHA-256 of each sender token, so the file contains no usable secret.
//!
//! [`TokenStore`] keeps the parsed file for the receiver and finds the name
//! of a presented token, comparing digests in constant time. The functions
//! below serve `agent-ledger token`: they rewrite the file atomically (a
//! temporary file renamed over it), so a receiver reloading it never reads
//! half a file. A new file is created with mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::receiver::reload::Reloadable;

/// Random bytes of a new token: 256 bits, beyond any guessing.
const TOKEN_BYTES: usize = 32;

/// Maximum length of a token name; names go into every row's `Sender`.
const MAX_NAME_LEN: usize = 128;

/// A token file problem; the message names the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write token file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid token file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "a token named {name:?} already exists in {path}; revoke it first or choose another name"
    )]
    Duplicate { path: PathBuf, name: String },
    #[error("no token named {name:?} in {path}")]
    NotFound { path: PathBuf, name: String },
    #[error("invalid token name {name:?}: use 1 to 128 letters, digits, '.', '_', '-', '@' or ':'")]
    InvalidName { name: String },
}

/// One entry of the token file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The sender's name, stored in `Sender` of every row it sends.
    pub name: String,
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
}

/// Checks a token name.
pub fn check_name(name: &str) -> Result<(), TokenFileError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ':');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(allowed) {
        return Err(TokenFileError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Parses the text of a token file; an empty file contains no tokens.
pub fn parse(path: &Path, text: &str) -> Result<Vec<TokenEntry>, TokenFileError> {
    let invalid = |message: String| TokenFileError::Invalid {
        path: path.to_owned(),
        message,
    };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let entries: Option<Vec<TokenEntry>> = serde_yaml_ng::from_str(text).map_err(|error| {
        invalid(format!(
            "{error}; expected a list of entries like `- name: collector` and `sha256: <64 hex digits>`"
        ))
    })?;
    let entries = entries.unwrap_or_default();
    for (index, entry) in entries.iter().enumerate() {
        check_name(&entry.name).map_err(|error| invalid(format!("entry {index}: {error}")))?;
        let is_hash = entry.sha256.len() == 64
            && entry
                .sha256
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if !is_hash {
            return Err(invalid(format!(
                "entry {index} ({}): sha256 must be 64 lower-case hex digits",
                entry.name
            )));
        }
        if entries[..index]
            .iter()
            .any(|other| other.name == entry.name)
        {
            return Err(invalid(format!("the name {:?} appears twice", entry.name)));
        }
    }
    Ok(entries)
}

/// Reads and parses a token file.
pub fn read(path: &Path) -> Result<Vec<TokenEntry>, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Reads a token file, or no entries when it does not exist yet.
fn read_or_empty(path: &Path) -> Result<Vec<TokenEntry>, TokenFileError> {
    match std::fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        _ => read(path),
    }
}

/// Writes `entries` to `path` atomically, mode 0600.
pub fn write(path: &Path, entries: &[TokenEntry]) -> Result<(), TokenFileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let write_error = |source| TokenFileError::Write {
        path: path.to_owned(),
        source,
    };
    let text = format!(
        "# agent-ledger sender tokens: name and SHA-256 of each token.\n{}",
        serde_yaml_ng::to_string(entries).unwrap_or_default()
    );
    let temporary = temporary_path(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(write_error)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(write_error(error));
    }
    Ok(())
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// A new random token: 32 bytes, base64url without padding.
pub fn generate() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Lower-case hex SHA-256 of a token, as stored in the file.
pub fn digest_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Adds a new token named `name` to the file (creating it) and returns the
/// token, which is stored nowhere else.
pub fn add(path: &Path, name: &str) -> Result<String, TokenFileError> {
    check_name(name)?;
    let mut entries = read_or_empty(path)?;
    if entries.iter().any(|entry| entry.name == name) {
        return Err(TokenFileError::Duplicate {
            path: path.to_owned(),
            name: name.to_owned(),
        });
    }
    let token = generate();
    entries.push(TokenEntry {
        name: name.to_owned(),
        sha256: digest_hex(&token),
    });
    write(path, &entries)?;
    Ok(token)
}

/// Removes the token named `name` from the file.
pub fn revoke(path: &Path, name: &str) -> Result<(), TokenFileError> {
    let mut entries = read(path)?;
    let before = entries.len();
    entries.retain(|entry| entry.name != name);
    if entries.len() == before {
        return Err(TokenFileError::NotFound {
            path: path.to_owned(),
            name: name.to_owned(),
        });
    }
    write(path, &entries)
}

/// One accepted token: its name and digest.
struct Known {
    name: Arc<str>,
    digest: [u8; 32],
}

/// The tokens the receiver accepts, reloaded when the file changes.
pub struct TokenStore {
    path: PathBuf,
    known: ArcSwap<Vec<Known>>,
}

impl TokenStore {
    /// Loads the token file.
    pub fn load(path: &Path) -> Result<Arc<TokenStore>, TokenFileError> {
        let store = TokenStore {
            path: path.to_owned(),
            known: ArcSwap::from_pointee(Vec::new()),
        };
        store.load_file()?;
        Ok(Arc::new(store))
    }

    fn load_file(&self) -> Result<usize, TokenFileError> {
        let entries = read(&self.path)?;
        let mut known = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&entry.sha256, &mut digest).map_err(|error| {
                TokenFileError::Invalid {
                    path: self.path.clone(),
                    message: error.to_string(),
                }
            })?;
            known.push(Known {
                name: Arc::from(entry.name),
                digest,
            });
        }
        let count = known.len();
        self.known.store(Arc::new(known));
        Ok(count)
    }

    /// Number of accepted tokens.
    pub fn len(&self) -> usize {
        self.known.load().len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of `token`, if the file lists it. Every entry is compared,
    /// each in constant time, so the time taken does not depend on which
    /// entry matches or how much of a digest does.
    pub fn find(&self, token: &str) -> Option<Arc<str>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let known = self.known.load();
        let mut found = None;
        for entry in known.iter() {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry.name.clone());
            }
        }
        found
    }
}

impl Reloadable for TokenStore {
    fn kind(&self) -> &'static str {
        "tokens"
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }

    fn reload(&self) -> Result<(), String> {
        let count = self.load_file().map_err(|error| error.to_string())?;
        tracing::info!(path = %self.path.display(), tokens = count, "token file loaded");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_creates_file_with_hash_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");

        let token = add(&path, "collector-eu").expect("token added");

        let text = std::fs::read_to_string(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "file mode");
        assert_eq!(token.len(), 43, "32 bytes in base64url without padding");
        assert!(!token.contains('='), "no padding: {token}");
        assert!(!text.contains(&token), "the file never holds the token");
        assert!(
            text.contains(&digest_hex(&token)),
            "the file holds the hash"
        );
        let entries = read(&path).expect("file parses");
        assert_eq!(entries.len(), 1, "one entry");
        assert_eq!(entries[0].name, "collector-eu", "name");
    }

    #[test]
    fn add_rejects_duplicate_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        add(&path, "agent").expect("first token");

        let duplicate = add(&path, "agent").expect_err("duplicate name");
        let spaced = add(&path, "two words").expect_err("name with a space");
        let empty = add(&path, "").expect_err("empty name");

        assert!(
            matches!(duplicate, TokenFileError::Duplicate { .. }),
            "{duplicate:?}"
        );
        assert!(
            matches!(spaced, TokenFileError::InvalidName { .. }),
            "{spaced:?}"
        );
        assert!(
            matches!(empty, TokenFileError::InvalidName { .. }),
            "{empty:?}"
        );
        assert_eq!(read(&path).unwrap().len(), 1, "file unchanged");
    }

    #[test]
    fn revoke_removes_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        add(&path, "keep").unwrap();
        add(&path, "drop").unwrap();

        revoke(&path, "drop").expect("revoked");
        let missing = revoke(&path, "drop").expect_err("already revoked");

        let names: Vec<String> = read(&path)
            .unwrap()
            .into_iter()
            .map(|entry| entry.name)
            .collect();
        assert_eq!(names, vec!["keep"], "remaining tokens");
        assert!(
            matches!(missing, TokenFileError::NotFound { .. }),
            "{missing:?}"
        );
    }

    #[test]
    fn parse_rejects_invalid_files() {
        let hash = "a".repeat(64);
        let cases = [
            ("not a list", "name: x\n".to_owned()),
            ("short hash", "- name: x\n  sha256: abc\n".to_owned()),
            (
                "upper-case hash",
                format!("- name: x\n  sha256: {}\n", "A".repeat(64)),
            ),
            (
                "unknown key",
                format!("- name: x\n  sha256: {hash}\n  token: secret\n"),
            ),
            (
                "duplicate name",
                format!("- name: x\n  sha256: {hash}\n- name: x\n  sha256: {hash}\n"),
            ),
            ("bad name", format!("- name: a b\n  sha256: {hash}\n")),
        ];
        for (name, text) in cases {
            let error = parse(Path::new("tokens.yaml"), &text).expect_err(name);

            assert!(
                error.to_string().contains("tokens.yaml"),
                "case {name}: message names the file: {error}"
            );
        }
    }

    #[test]
    fn parse_accepts_empty_file() {
        let cases = ["", "\n", "# no tokens yet\n", "[]\n"];
        for text in cases {
            let entries = parse(Path::new("tokens.yaml"), text).expect("valid");

            assert!(entries.is_empty(), "text {text:?}");
        }
    }

    #[test]
    fn store_finds_names_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        let first = add(&path, "first").unwrap();
        let store = TokenStore::load(&path).expect("store loads");
        let second = add(&path, "second").unwrap();

        let before_reload = store.find(&second);
        store.reload().expect("reloads");

        assert_eq!(store.find(&first).as_deref(), Some("first"), "first token");
        assert_eq!(before_reload, None, "a new token needs a reload");
        assert_eq!(
            store.find(&second).as_deref(),
            Some("second"),
            "after reload"
        );
        assert_eq!(store.find("wrong"), None, "unknown token");
        assert_eq!(store.find(""), None, "empty token");
    }

    #[test]
    fn store_keeps_tokens_when_reload_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        let token = add(&path, "agent").unwrap();
        let store = TokenStore::load(&path).unwrap();
        std::fs::write(&path, "- this is: [not valid\n").unwrap();

        let result = store.reload();

        assert!(result.is_err(), "invalid file is reported");
        assert_eq!(
            store.find(&token).as_deref(),
            Some("agent"),
            "old tokens stay"
        );
    }
}
