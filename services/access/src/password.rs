//! MQTT passwords: argon2id PHC strings, generated secrets, and the
//! `{device}@{tenant}` username.

use std::sync::LazyLock;

use argon2::password_hash::phc::Output;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::AccessError;

/// Random bytes in a generated password: 192 bits.
const PASSWORD_BYTES: usize = 24;
/// Salt length, as the PHC string format recommends.
const SALT_BYTES: usize = 16;

fn random<const N: usize>() -> Result<[u8; N], AccessError> {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| AccessError::Random)?;
    Ok(bytes)
}

/// A new random password (192 bits, URL-safe base64, 32 characters), to
/// hand out once.
pub fn generate_password() -> Result<String, AccessError> {
    Ok(URL_SAFE_NO_PAD.encode(random::<PASSWORD_BYTES>()?))
}

/// The argon2id PHC string (`$argon2id$v=19$…`) of `password`, with a
/// random salt and argon2's default cost. CPU-heavy: call it off the
/// async executor (`spawn_blocking`).
pub fn hash_password(password: &str) -> Result<String, AccessError> {
    let salt = random::<SALT_BYTES>()?;
    let hash = Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| AccessError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `hash`. A malformed hash
/// matches nothing. CPU-heavy, as [`hash_password`].
pub fn verify_password(password: &[u8], hash: &str) -> bool {
    verify_password_in(password, hash, &mut Vec::new())
}

/// Most argon2 memory one check may ask for (the hashes are ours, with
/// argon2's default 19 MiB; this bounds a tampered row): 64 MiB.
const MAX_BLOCKS: usize = 64 * 1024;

/// [`verify_password`] computing in `blocks`, kept by the caller between
/// checks: a thread that checks passwords reuses one 19 MiB buffer rather
/// than allocating (and its allocator's arena keeping) a new one each time.
pub(crate) fn verify_password_in(password: &[u8], hash: &str, blocks: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let count = params.block_count();
    if count > MAX_BLOCKS {
        return false;
    }
    if blocks.len() < count {
        blocks.resize(count, Block::default());
    }
    let mut buffer = [0u8; 64];
    let Some(out) = buffer.get_mut(..expected.len()) else {
        return false;
    };
    let Some(memory) = blocks.get_mut(..count) else {
        return false;
    };
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, out, memory)
        .is_ok()
        // Output's equality is constant-time.
        && Output::new(out).is_ok_and(|computed| computed == *expected)
}

/// A hash no password matches, verified against for unknown users so that
/// they take as long to refuse as a wrong password.
static DECOY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    random::<PASSWORD_BYTES>()
        .ok()
        .and_then(|secret| hash_password(&URL_SAFE_NO_PAD.encode(secret)).ok())
});

/// Spend the time of one verification (in `blocks`, as
/// [`verify_password_in`]) and refuse.
pub(crate) fn decoy_verify_in(password: &[u8], blocks: &mut Vec<Block>) {
    if let Some(hash) = DECOY_HASH.as_deref() {
        let _ = verify_password_in(password, hash, blocks);
    }
}

/// `{device}@{tenant}`: a device's MQTT username.
pub fn device_username(device: &str, tenant: &str) -> String {
    format!("{device}@{tenant}")
}

/// Splits `{device}@{tenant}` when both halves are valid ids; anything
/// else is not a device username (it may be a service credential's).
pub fn parse_device_username(username: &str) -> Option<(&str, &str)> {
    let (device, tenant) = username.rsplit_once('@')?;
    (pki::validate_device_id(device).is_ok() && pki::validate_tenant_id(tenant).is_ok())
        .then_some((device, tenant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let password = generate_password().unwrap();
        assert_eq!(password.len(), 32);
        assert!(
            password
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        let hash = hash_password(&password).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(verify_password(password.as_bytes(), &hash));
        assert!(!verify_password(b"wrong", &hash));
        assert!(!verify_password(password.as_bytes(), "not a PHC string"));
        // One buffer for many checks gives the same answers.
        let mut blocks = Vec::new();
        assert!(verify_password_in(password.as_bytes(), &hash, &mut blocks));
        assert!(!verify_password_in(b"wrong", &hash, &mut blocks));
        assert_eq!(blocks.len(), 19 * 1024, "argon2's default 19 MiB");
        let other = hash_password("other").unwrap();
        assert!(verify_password_in(b"other", &other, &mut blocks));
        assert_ne!(hash_password(&password).unwrap(), hash, "salted");
        assert_ne!(generate_password().unwrap(), password);
    }

    #[test]
    fn device_usernames() {
        assert_eq!(parse_device_username("d-1@acme"), Some(("d-1", "acme")));
        assert_eq!(device_username("d-1", "acme"), "d-1@acme");
        assert_eq!(parse_device_username("backend"), None);
        assert_eq!(parse_device_username("d@ACME"), None);
        assert_eq!(parse_device_username("d/x@acme"), None);
        assert_eq!(parse_device_username("@acme"), None);
    }
}
