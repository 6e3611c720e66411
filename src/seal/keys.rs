//! Ed25519 checkpoint keys: generation, PEM files and key ids.
//!
//! Private keys are PKCS#8 PEM (`BEGIN PRIVATE KEY`), public keys SPKI PEM
//! (`BEGIN PUBLIC KEY`), the formats `openssl genpkey -algorithm ed25519`
//! and `openssl pkey -pubout` write. A key id is the first 16 hex digits of
//! the SHA-256 of the public key's DER encoding, so an auditor can compute it
//! with `openssl pkey -pubin -in KEY.pub -outform DER | sha256sum`.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// Hex digits of a key id.
const KEY_ID_DIGITS: usize = 16;

/// A key file that cannot be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "invalid private key file {path}: expected an Ed25519 private key in PKCS#8 PEM (BEGIN PRIVATE KEY), as `agent-ledger keygen` writes"
    )]
    InvalidPrivate { path: PathBuf },
    #[error(
        "invalid public key file {path}: expected an Ed25519 public key in SPKI PEM (BEGIN PUBLIC KEY), as `agent-ledger keygen` writes to FILE.pub"
    )]
    InvalidPublic { path: PathBuf },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} already exists; choose another --out or remove the old file first")]
    Exists { path: PathBuf },
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// Computes the key id of `key`.
pub fn key_id(key: &VerifyingKey) -> String {
    let der = key
        .to_public_key_der()
        .expect("an Ed25519 public key always encodes as DER");
    let digest = hex::encode(Sha256::digest(der.as_bytes()));
    digest[..KEY_ID_DIGITS].to_owned()
}

/// A private key with its key id, for signing checkpoints.
pub struct CheckpointSigner {
    key: SigningKey,
    key_id: String,
}

impl CheckpointSigner {
    /// Reads a PKCS#8 PEM private key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = read(path)?;
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|_| KeyError::InvalidPrivate {
            path: path.to_owned(),
        })?;
        Ok(CheckpointSigner::new(key))
    }

    fn new(key: SigningKey) -> Self {
        let key_id = key_id(&key.verifying_key());
        CheckpointSigner { key, key_id }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs `message`; returns the 64-byte Ed25519 signature.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }
}

/// A public key with its key id, for verifying checkpoints.
#[derive(Clone, Debug)]
pub struct PublicKey {
    pub key: VerifyingKey,
    pub key_id: String,
}

impl PublicKey {
    /// Reads an SPKI PEM public key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = read(path)?;
        let key = VerifyingKey::from_public_key_pem(text.trim()).map_err(|_| {
            KeyError::InvalidPublic {
                path: path.to_owned(),
            }
        })?;
        Ok(PublicKey {
            key_id: key_id(&key),
            key,
        })
    }

    /// Checks whether `signature` (64 bytes) is a valid signature of
    /// `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify(message, &signature).is_ok()
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Generates a key pair: the private key at `out` (mode 0600) and the
/// public key at `out` plus `.pub`. Returns the key id. Existing files are
/// never overwritten.
pub fn generate(out: &Path) -> Result<String, KeyError> {
    let public_path = public_path(out);
    for path in [out, public_path.as_path()] {
        if path.exists() {
            return Err(KeyError::Exists {
                path: path.to_owned(),
            });
        }
    }
    let mut secret = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut secret)
        .map_err(|error| KeyError::Random(error.to_string()))?;
    let key = SigningKey::from_bytes(&secret);
    secret.fill(0);
    // PKCS#8 version 1 (without the public key), the form OpenSSL writes.
    let keypair = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let private_pem = keypair
        .to_pkcs8_pem(LineEnding::LF)
        .expect("an Ed25519 key always encodes as PKCS#8");
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("an Ed25519 public key always encodes as SPKI");
    write_new(out, private_pem.as_bytes(), 0o600)?;
    write_new(&public_path, public_pem.as_bytes(), 0o644)?;
    Ok(key_id(&key.verifying_key()))
}

/// Returns the public key file next to private key file `out`.
pub fn public_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let error = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ledger.key");
        let key_id = generate(&out).unwrap();
        let signer = CheckpointSigner::from_file(&out).unwrap();
        let public = PublicKey::from_file(&public_path(&out)).unwrap();
        assert_eq!(signer.key_id(), key_id);
        assert_eq!(public.key_id, key_id);
        assert_eq!(key_id.len(), KEY_ID_DIGITS);
        let signature = signer.sign(b"message");
        assert!(public.verifies(b"message", &signature));
        assert!(!public.verifies(b"other message", &signature));
    }

    #[test]
    fn private_key_mode_is_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ledger.key");
        generate(&out).unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn existing_file_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ledger.key");
        std::fs::write(&out, "keep").unwrap();
        assert!(matches!(generate(&out), Err(KeyError::Exists { .. })));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep");
    }

    #[test]
    fn public_key_rejected_as_private() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ledger.key");
        generate(&out).unwrap();
        let error = CheckpointSigner::from_file(&public_path(&out))
            .err()
            .unwrap();
        assert!(error.to_string().contains("PKCS#8"), "{error}");
    }
}
