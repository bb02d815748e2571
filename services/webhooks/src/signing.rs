//! Signing per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com/>): the signed content is
//! `{webhook-id}.{webhook-timestamp}.{body}`, the signature
//! `v1,` + base64(HMAC-SHA256(key, content)), and the key is the base64 part
//! of a `whsec_…` secret. During a rotation the header carries one
//! space-separated signature per secret.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::Error;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Key length of generated secrets (the spec allows 24–64 bytes).
const SECRET_BYTES: usize = 32;

/// A decoded signing key.
pub struct SigningKey(hmac::Key);

impl SigningKey {
    /// Parse `whsec_<base64>`.
    pub fn parse(secret: &str) -> Result<SigningKey, Error> {
        let encoded = secret
            .strip_prefix(SECRET_PREFIX)
            .ok_or(Error::InvalidSecret)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| Error::InvalidSecret)?;
        if bytes.is_empty() {
            return Err(Error::InvalidSecret);
        }
        Ok(SigningKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// `v1,<base64 signature>` of one request.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(webhook_id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

/// Makes the `webhook-id` of a delivery: `msg_` + 32 hex digits of
/// HMAC-SHA256(key, delivery id). The same for every attempt at one
/// delivery (receivers deduplicate on it) and, with the key derived from
/// the platform's key-encryption key, on every node and after restarts;
/// unlike the delivery's row id it reveals neither how many events the
/// platform carries nor its other tenants' volume. `Debug` hides the key.
#[derive(Clone)]
pub struct MessageIdKey(hmac::Key);

impl MessageIdKey {
    /// A key from secret bytes (e.g. derived from the KEK).
    pub fn new(bytes: &[u8]) -> MessageIdKey {
        MessageIdKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// A random key of this process: ids change if a delivery is retried
    /// after a restart. What [`crate::WorkerConfig::default`] uses.
    pub fn random() -> MessageIdKey {
        let mut bytes = [0u8; 32];
        // The OS random source does not fail on supported platforms; if it
        // did, two v4 UUIDs (also OS randomness) stand in.
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        MessageIdKey::new(&bytes)
    }

    /// The `webhook-id` of delivery `delivery`.
    pub fn webhook_id(&self, delivery: i64) -> String {
        let tag = hmac::sign(&self.0, &delivery.to_be_bytes());
        let hex: String = tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("msg_{hex}")
    }
}

impl std::fmt::Debug for MessageIdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageIdKey(<redacted>)")
    }
}

/// A new random secret, `whsec_` + base64 of 32 bytes.
pub fn generate_secret() -> Result<String, Error> {
    let mut bytes = [0u8; SECRET_BYTES];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::InvalidSecret)?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// The `webhook-signature` header value: one signature per secret, space
/// separated, current secret first.
pub fn signature_header(
    secrets: &[&str],
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, Error> {
    let signatures = secrets
        .iter()
        .map(|secret| Ok(SigningKey::parse(secret)?.sign(webhook_id, timestamp, body)))
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_ids_are_stable_per_delivery_and_reveal_no_count() {
        let key = MessageIdKey::new(b"k");
        assert_eq!(key.webhook_id(7), key.webhook_id(7));
        assert_ne!(key.webhook_id(7), key.webhook_id(8));
        assert_ne!(key.webhook_id(7), MessageIdKey::new(b"other").webhook_id(7));
        assert_ne!(key.webhook_id(7), MessageIdKey::random().webhook_id(7));
        let id = key.webhook_id(1);
        assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
        assert!(!id.ends_with("_1"), "{id}");
    }

    #[test]
    fn matches_the_specs_example() {
        // The example of the Standard Webhooks reference libraries.
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn generated_secrets_parse_and_differ() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX));
        SigningKey::parse(&a).unwrap();
    }

    #[test]
    fn bad_secrets_are_refused() {
        for bad in [
            "",
            "whsec_",
            "sk_abc",
            "whsec_!!!",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            assert!(
                matches!(SigningKey::parse(bad), Err(Error::InvalidSecret)),
                "{bad}"
            );
        }
    }

    #[test]
    fn rotation_sends_one_signature_per_secret() {
        let (a, b) = (generate_secret().unwrap(), generate_secret().unwrap());
        let header = signature_header(&[&a, &b], "msg_1", 1, b"{}").unwrap();
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            SigningKey::parse(&a).unwrap().sign("msg_1", 1, b"{}")
        );
        assert_eq!(
            parts[1],
            SigningKey::parse(&b).unwrap().sign("msg_1", 1, b"{}")
        );
    }
}
