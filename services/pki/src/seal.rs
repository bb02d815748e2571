//! Key encryption at rest. CA private keys and the REST API's token signing
//! keys are stored sealed under a
//! key-encryption key (KEK) that lives outside the database (config, env or
//! a 0600 file), so a leaked database or backup does not leak the CAs.
//!
//! Sealed format, version 1: `0x01 ‖ nonce (12) ‖ AES-256-GCM(ciphertext ‖ tag)`
//! with AAD `fleetmq-pki-sealed-key/v1/{purpose}`. The AAD binds a sealed key
//! to its owner: tenant A's sealed key copied into tenant B's row does not open.

use std::fmt;
use std::io::Write;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use crate::Error;

/// Length of a KEK in bytes (AES-256).
pub const KEK_LEN: usize = 32;
const VERSION_1: u8 = 1;
const AAD_PREFIX: &str = "fleetmq-pki-sealed-key/v1/";

/// Whose key a sealed blob holds; part of the AAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPurpose {
    /// The platform root CA's key.
    RootCa,
    /// A tenant's intermediate CA key.
    TenantCa(String),
    /// A REST API token signing key, by its `kid`.
    TokenSigning(String),
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPurpose::RootCa => f.write_str("root-ca"),
            KeyPurpose::TenantCa(tenant) => write!(f, "tenant-ca/{tenant}"),
            KeyPurpose::TokenSigning(kid) => write!(f, "token-signing/{kid}"),
        }
    }
}

/// The key-encryption key. Zeroed on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct Kek(Zeroizing<[u8; KEK_LEN]>);

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

impl Kek {
    /// A KEK from raw bytes.
    pub fn from_bytes(bytes: [u8; KEK_LEN]) -> Kek {
        Kek(Zeroizing::new(bytes))
    }

    /// A KEK from 64 hex digits (surrounding whitespace allowed), as given
    /// in config or the environment.
    pub fn from_hex(text: &str) -> Result<Kek, Error> {
        let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
        hex::decode_to_slice(text.trim(), bytes.as_mut()).map_err(|_| Error::InvalidKek {
            reason: format!("expected {} hex digits", KEK_LEN * 2),
        })?;
        Ok(Kek(bytes))
    }

    /// A fresh random KEK.
    pub fn generate() -> Result<Kek, Error> {
        let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(|_| Error::Crypto { what: "random" })?;
        Ok(Kek(bytes))
    }

    /// The KEK as 64 hex digits, for writing to its file. Handle with care.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_ref()))
    }

    /// Read the KEK from `path` (hex), or create the file with a new random
    /// KEK, mode 0600 on Unix, if it does not exist. A file readable by
    /// group or others is refused.
    pub fn load_or_create_file(path: &Path) -> Result<Kek, Error> {
        let file_error = |source| Error::KekFile {
            path: path.display().to_string(),
            source,
        };
        match Kek::load_file(path) {
            Err(Error::KekFile { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let kek = Kek::generate()?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(file_error)?;
                file.write_all(kek.to_hex().as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(file_error)?;
                Ok(kek)
            }
            loaded => loaded,
        }
    }

    /// Read the KEK from `path` (hex); never creates it. A missing file is
    /// a [`Error::KekFile`] with [`std::io::ErrorKind::NotFound`]: a node
    /// joining a database whose root CA exists must be given the key, not
    /// make a new one. A file readable by group or others is refused.
    pub fn load_file(path: &Path) -> Result<Kek, Error> {
        let file_error = |source| Error::KekFile {
            path: path.display().to_string(),
            source,
        };
        let mut text = std::fs::read_to_string(path).map_err(file_error)?;
        let kek = check_private(path)
            .map_err(file_error)
            .and_then(|()| Kek::from_hex(&text));
        text.zeroize();
        kek
    }

    /// A 32-byte key for `label`, derived from the KEK (HMAC-SHA256 of the
    /// label): the same on every node and after restarts, unknown to
    /// whoever has only the database, and useless for opening sealed keys.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.0.as_ref());
        let tag = aws_lc_rs::hmac::sign(&key, format!("fleetmq-kek-derive/v1/{label}").as_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `blob` looks like the output of [`Kek::seal`] (its version
    /// byte) rather than a bare DER key (which starts with SEQUENCE, 0x30).
    pub fn is_sealed(blob: &[u8]) -> bool {
        blob.first() == Some(&VERSION_1)
    }

    fn cipher(&self) -> Result<LessSafeKey, Error> {
        let key = UnboundKey::new(&AES_256_GCM, self.0.as_ref())
            .map_err(|_| Error::Crypto { what: "AES key" })?;
        Ok(LessSafeKey::new(key))
    }

    /// Seal `secret` (a PKCS#8 DER key) for `purpose`.
    pub fn seal(&self, secret: &[u8], purpose: &KeyPurpose) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::Crypto { what: "random" })?;
        let mut in_out = secret.to_vec();
        let aad = format!("{AAD_PREFIX}{purpose}");
        let sealed = self.cipher()?.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut in_out,
        );
        if sealed.is_err() {
            in_out.zeroize();
            return Err(Error::Crypto { what: "seal" });
        }
        let mut out = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        out.push(VERSION_1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        Ok(out)
    }

    /// Open a blob made by [`Kek::seal`] for the same `purpose`.
    pub fn open(&self, sealed: &[u8], purpose: &KeyPurpose) -> Result<Zeroizing<Vec<u8>>, Error> {
        let unseal_error = || Error::Unseal {
            purpose: purpose.to_string(),
        };
        let (&version, rest) = sealed.split_first().ok_or_else(unseal_error)?;
        if version != VERSION_1 {
            return Err(Error::UnknownSealVersion { version });
        }
        let (nonce, ciphertext) = rest.split_at_checked(NONCE_LEN).ok_or_else(unseal_error)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unseal_error())?;
        let aad = format!("{AAD_PREFIX}{purpose}");
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let len = self
            .cipher()?
            .open_in_place(nonce, Aad::from(aad.as_bytes()), buffer.as_mut_slice())
            .map_err(|_| unseal_error())?
            .len();
        buffer.truncate(len);
        Ok(buffer)
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("mode {:o} lets others read it; chmod 600", mode & 0o777),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_are_stable_per_label_and_kek() {
        let kek = Kek::generate().unwrap();
        assert_eq!(*kek.derive("webhook-id"), *kek.derive("webhook-id"));
        assert_ne!(*kek.derive("webhook-id"), *kek.derive("other"));
        assert_ne!(
            *kek.derive("webhook-id"),
            *Kek::generate().unwrap().derive("webhook-id")
        );
        let sealed = kek
            .seal(b"0\x81key", &KeyPurpose::TokenSigning("k".into()))
            .unwrap();
        assert!(Kek::is_sealed(&sealed));
        assert!(!Kek::is_sealed(b"0\x81key"));
    }

    #[test]
    fn seals_and_opens_for_the_same_purpose_only() {
        let kek = Kek::generate().unwrap();
        let acme = KeyPurpose::TenantCa("acme".into());
        let sealed = kek.seal(b"secret key", &acme).unwrap();
        assert_eq!(sealed[0], VERSION_1);
        assert!(!sealed.windows(10).any(|w| w == b"secret key"));
        assert_eq!(kek.open(&sealed, &acme).unwrap().as_slice(), b"secret key");
        // Bound to its owner, its KEK and its bytes.
        assert!(matches!(
            kek.open(&sealed, &KeyPurpose::TenantCa("other".into())),
            Err(Error::Unseal { .. })
        ));
        assert!(matches!(
            Kek::generate().unwrap().open(&sealed, &acme),
            Err(Error::Unseal { .. })
        ));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(kek.open(&tampered, &acme).is_err());
        assert!(kek.open(&sealed[..5], &acme).is_err());
        assert!(kek.open(&[], &acme).is_err());
        let mut v2 = sealed;
        v2[0] = 2;
        assert!(matches!(
            kek.open(&v2, &acme),
            Err(Error::UnknownSealVersion { version: 2 })
        ));
    }

    #[test]
    fn two_seals_differ_by_nonce() {
        let kek = Kek::generate().unwrap();
        let a = kek.seal(b"k", &KeyPurpose::RootCa).unwrap();
        let b = kek.seal(b"k", &KeyPurpose::RootCa).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn hex_round_trip_and_redacted_debug() {
        let kek = Kek::generate().unwrap();
        let hex = kek.to_hex();
        let again = Kek::from_hex(&format!(" {}\n", hex.as_str())).unwrap();
        let sealed = kek.seal(b"x", &KeyPurpose::RootCa).unwrap();
        assert_eq!(
            again.open(&sealed, &KeyPurpose::RootCa).unwrap().as_slice(),
            b"x"
        );
        assert_eq!(format!("{kek:?}"), "Kek(<redacted>)");
        assert!(Kek::from_hex("abcd").is_err());
        let err = Kek::from_hex(&"zz".repeat(32)).unwrap_err().to_string();
        assert!(!err.contains("zz"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn kek_file_is_created_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let first = Kek::load_or_create_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = Kek::load_or_create_file(&path).unwrap();
        assert_eq!(first.to_hex(), second.to_hex());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Kek::load_or_create_file(&path),
            Err(Error::KekFile { .. })
        ));
    }

    #[test]
    fn load_file_never_creates_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        match Kek::load_file(&path) {
            Err(Error::KekFile { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected a missing file, got {other:?}"),
        }
        assert!(!path.exists());
        let made = Kek::load_or_create_file(&path).unwrap();
        assert_eq!(Kek::load_file(&path).unwrap().to_hex(), made.to_hex());
    }
}
