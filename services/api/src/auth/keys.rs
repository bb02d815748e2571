//! [`Keys`]: the ES256 keys the API signs and verifies bearer tokens with,
//! kept in the database (`signing_keys`) so that every node and the
//! `fleetmq admin token` command share them.
//!
//! The newest unretired key signs. [`Keys::rotate`] adds a key and retires
//! the others: they stop signing but keep verifying until every token they
//! signed has expired ([`MAX_TTL`] after retirement), then they are deleted.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use store::{NewSigningKey, SigningKey, Store, TenantId};

use super::{AUDIENCE, AuthError, Claims, ISSUER, Role};

/// The one algorithm we sign and accept. Pinned: the token header's `alg`
/// is never trusted to pick the verification method (no `none`, no HS256
/// with the public key as the secret).
pub const ALGORITHM: Algorithm = Algorithm::ES256;
const ALGORITHM_NAME: &str = "ES256";

/// Longest lifetime a token may be issued with.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// Longest `Authorization` token we try to decode.
pub(crate) const MAX_TOKEN_LEN: usize = 8 * 1024;

/// An unknown `kid` makes us re-read the keys from the database (another
/// node may have rotated), but at most this often.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The signing and verifying keys. Cheap to clone (shared).
#[derive(Clone)]
pub struct Keys {
    store: Store,
    inner: Arc<RwLock<KeySet>>,
}

struct KeySet {
    signing_kid: String,
    signing: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
    loaded_at: Instant,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kid = self.read(|set| set.signing_kid.clone());
        f.debug_struct("Keys")
            .field("signing_kid", &kid)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Load the keys from the database, creating the first one if there is
    /// none (first start). Needs the migrated schema.
    pub async fn load_or_create(store: &Store) -> Result<Keys, AuthError> {
        if store.list_signing_keys().await?.is_empty() {
            create_key(store).await?;
        }
        let set = load(store).await?;
        Ok(Keys {
            store: store.clone(),
            inner: Arc::new(RwLock::new(set)),
        })
    }

    /// Make a new signing key and retire the others (they keep verifying
    /// until their tokens expire). Returns the new `kid`.
    pub async fn rotate(&self) -> Result<String, AuthError> {
        let key = create_key(&self.store).await?;
        self.store.retire_signing_keys_except(&key.kid).await?;
        self.reload().await?;
        tracing::info!(kid = %key.kid, "signing key rotated");
        Ok(key.kid)
    }

    /// The `kid` new tokens are signed with.
    pub fn signing_kid(&self) -> String {
        self.read(|set| set.signing_kid.clone())
    }

    /// A bearer token for `role` (in `tenant` for tenant roles), valid for
    /// `ttl`, with subject `cli`. See [`Keys::issue_for`].
    pub fn issue(
        &self,
        role: Role,
        tenant: Option<&TenantId>,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        self.issue_for("cli", role, tenant, ttl)
    }

    /// A bearer token for `subject` acting as `role`. `platform-admin` takes
    /// no tenant; the other roles need one. `ttl` is 1 s to [`MAX_TTL`].
    pub fn issue_for(
        &self,
        subject: &str,
        role: Role,
        tenant: Option<&TenantId>,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        match (role, tenant) {
            (Role::PlatformAdmin, Some(_)) => return Err(AuthError::TenantNotAllowed),
            (Role::PlatformAdmin, None) | (_, Some(_)) => {}
            (_, None) => return Err(AuthError::TenantRequired(role)),
        }
        if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
            return Err(AuthError::TtlOutOfRange {
                max_secs: MAX_TTL.as_secs(),
            });
        }
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: subject.to_owned(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl.as_secs()),
            jti: uuid::Uuid::now_v7().to_string(),
            role,
            tenant: tenant.map(|t| t.as_str().to_owned()),
        };
        self.sign(&claims)
    }

    /// Sign arbitrary claims with the current key (tests craft bad tokens
    /// this way).
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        let (kid, key) = self.read(|set| (set.signing_kid.clone(), set.signing.clone()));
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(kid);
        jsonwebtoken::encode(&header, claims, &key).map_err(AuthError::Sign)
    }

    /// The claims of a valid token: our algorithm, a known `kid`, a good
    /// signature, our issuer and audience, within `nbf`..`exp`.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(AuthError::WrongAlgorithm);
        }
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
        let key = match self.read(|set| set.verifying.get(&kid).cloned()) {
            Some(key) => key,
            None => {
                let stale = self.read(|set| set.loaded_at.elapsed() >= REFRESH_INTERVAL);
                if !stale {
                    return Err(AuthError::UnknownKey);
                }
                self.reload().await?;
                self.read(|set| set.verifying.get(&kid).cloned())
                    .ok_or(AuthError::UnknownKey)?
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation())
            .map_err(AuthError::from_jwt)?;
        Ok(data.claims)
    }

    async fn reload(&self) -> Result<(), AuthError> {
        let set = load(&self.store).await?;
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = set;
        Ok(())
    }

    fn read<R>(&self, f: impl FnOnce(&KeySet) -> R) -> R {
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }
}

fn validation() -> Validation {
    let mut v = Validation::new(ALGORITHM);
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = true;
    v.set_audience(&[AUDIENCE]);
    v.set_issuer(&[ISSUER]);
    v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    v
}

async fn create_key(store: &Store) -> Result<SigningKey, AuthError> {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| AuthError::KeyGeneration)?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|_| AuthError::KeyGeneration)?;
    let new = NewSigningKey {
        kid: uuid::Uuid::now_v7().simple().to_string(),
        algorithm: ALGORITHM_NAME.to_owned(),
        private_key: pkcs8.as_ref().to_vec(),
        public_key: pair.public_key().as_ref().to_vec(),
    };
    let key = store.create_signing_key(&new).await?;
    tracing::info!(kid = %key.kid, "signing key created");
    Ok(key)
}

/// Read every key; drop those retired so long ago that nothing they signed
/// can still be valid.
async fn load(store: &Store) -> Result<KeySet, AuthError> {
    let horizon = Utc::now()
        - chrono::Duration::from_std(MAX_TTL + Duration::from_secs(LEEWAY_SECS))
            .unwrap_or_default();
    store.delete_signing_keys_retired_before(horizon).await?;
    let keys = store.list_signing_keys().await?;
    let verifying = keys
        .iter()
        .filter(|k| k.algorithm == ALGORITHM_NAME)
        .map(|k| (k.kid.clone(), DecodingKey::from_ec_der(&k.public_key)))
        .collect();
    // Newest unretired key signs (two nodes starting at once may both have
    // created one: they agree on the newest).
    let signing = keys
        .iter()
        .rev()
        .find(|k| k.retired_at.is_none() && k.algorithm == ALGORITHM_NAME)
        .ok_or(AuthError::NoSigningKey)?;
    Ok(KeySet {
        signing_kid: signing.kid.clone(),
        signing: EncodingKey::from_ec_der(&signing.private_key),
        verifying,
        loaded_at: Instant::now(),
    })
}
