//! MQTT passwords: argon2id PHC strings, generated secrets, and the
//! `{device}@{tenant}` username.

use std::sync::LazyLock;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
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
    Argon2::default().verify_password(password, hash).is_ok()
}

/// A hash no password matches, verified against for unknown users so that
/// they take as long to refuse as a wrong password.
static DECOY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    random::<PASSWORD_BYTES>()
        .ok()
        .and_then(|secret| hash_password(&URL_SAFE_NO_PAD.encode(secret)).ok())
});

/// Spend the time of one verification and refuse.
pub(crate) fn decoy_verify(password: &[u8]) {
    if let Some(hash) = DECOY_HASH.as_deref() {
        let _ = verify_password(password, hash);
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
