//! [`Keys`]: the ES256 keys the API signs and verifies bearer tokens with,
//! kept in the database (`signing_keys`) so that every node and the
//! `fleetmq admin token` command share them. With a key-encryption key
//! ([`Keys::load_or_create_sealed`], what the server uses) the private keys
//! are stored sealed like the CA keys, so the database alone cannot mint
//! tokens; keys stored bare by older versions are sealed on load.
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
use pki::{Kek, KeyPurpose};
use store::{NewSigningKey, SigningKey, Store, TenantId};
use zeroize::Zeroizing;

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
    /// Seals private keys at rest; `None` stores them bare (tests, tools).
    kek: Option<Arc<Kek>>,
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
    /// Private keys are stored bare: for tests and tools without the
    /// key-encryption key; the server uses [`Keys::load_or_create_sealed`].
    pub async fn load_or_create(store: &Store) -> Result<Keys, AuthError> {
        Self::open(store, None).await
    }

    /// [`Keys::load_or_create`] with private keys sealed under `kek`; keys
    /// found bare (stored by an older version) are sealed in place.
    pub async fn load_or_create_sealed(store: &Store, kek: Arc<Kek>) -> Result<Keys, AuthError> {
        Self::open(store, Some(kek)).await
    }

    async fn open(store: &Store, kek: Option<Arc<Kek>>) -> Result<Keys, AuthError> {
        if store.list_signing_keys().await?.is_empty() {
            create_key(store, kek.as_deref()).await?;
        }
        let set = load(store, kek.as_deref()).await?;
        Ok(Keys {
            store: store.clone(),
            kek,
            inner: Arc::new(RwLock::new(set)),
        })
    }

    /// Make a new signing key and retire the others (they keep verifying
    /// until their tokens expire). Returns the new `kid`.
    pub async fn rotate(&self) -> Result<String, AuthError> {
        let key = create_key(&self.store, self.kek.as_deref()).await?;
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

    /// A bearer token for `subject` acting as `role` in `tenant` as it is
    /// now: the token dies with this incarnation of the tenant (see
    /// [`super::incarnation`]). `role` must be a tenant role.
    pub fn issue_in(
        &self,
        subject: &str,
        role: Role,
        tenant: &store::Tenant,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let id = TenantId::parse(&tenant.id).map_err(|e| AuthError::BadClaims(e.to_string()))?;
        self.issue_claims(
            subject,
            role,
            Some(&id),
            Some(super::incarnation(tenant)),
            ttl,
        )
    }

    /// A bearer token for `subject` acting as `role`. `platform-admin` takes
    /// no tenant; the other roles need one. `ttl` is 1 s to [`MAX_TTL`].
    /// The token names no incarnation of its tenant: prefer
    /// [`Keys::issue_in`] for tenants that exist.
    pub fn issue_for(
        &self,
        subject: &str,
        role: Role,
        tenant: Option<&TenantId>,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        self.issue_claims(subject, role, tenant, None, ttl)
    }

    fn issue_claims(
        &self,
        subject: &str,
        role: Role,
        tenant: Option<&TenantId>,
        tinc: Option<i64>,
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
            tinc,
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
        let set = load(&self.store, self.kek.as_deref()).await?;
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

async fn create_key(store: &Store, kek: Option<&Kek>) -> Result<SigningKey, AuthError> {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| AuthError::KeyGeneration)?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|_| AuthError::KeyGeneration)?;
    let kid = uuid::Uuid::now_v7().simple().to_string();
    let private_key = match kek {
        Some(kek) => kek
            .seal(pkcs8.as_ref(), &KeyPurpose::TokenSigning(kid.clone()))
            .map_err(|_| AuthError::KeyGeneration)?,
        None => pkcs8.as_ref().to_vec(),
    };
    let new = NewSigningKey {
        kid,
        algorithm: ALGORITHM_NAME.to_owned(),
        private_key,
        public_key: pair.public_key().as_ref().to_vec(),
    };
    let key = store.create_signing_key(&new).await?;
    tracing::info!(kid = %key.kid, "signing key created");
    Ok(key)
}

/// Read every key; drop those retired so long ago that nothing they signed
/// can still be valid.
async fn load(store: &Store, kek: Option<&Kek>) -> Result<KeySet, AuthError> {
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
    let private_key = match kek {
        Some(kek) => {
            for key in keys.iter().filter(|k| !Kek::is_sealed(&k.private_key)) {
                seal_in_place(store, kek, key).await?;
            }
            if !Kek::is_sealed(&signing.private_key) {
                // Sealed in the database just now; this copy is the bare one.
                Zeroizing::new(signing.private_key.clone())
            } else {
                kek.open(
                    &signing.private_key,
                    &KeyPurpose::TokenSigning(signing.kid.clone()),
                )
                .map_err(|e| {
                    tracing::error!(kid = %signing.kid, error = %e, "cannot open the signing key");
                    AuthError::NoSigningKey
                })?
            }
        }
        // Without the KEK only a bare key can sign (a sealed one fails
        // to parse, and signing fails).
        None => Zeroizing::new(signing.private_key.clone()),
    };
    Ok(KeySet {
        signing_kid: signing.kid.clone(),
        signing: EncodingKey::from_ec_der(&private_key),
        verifying,
        loaded_at: Instant::now(),
    })
}

/// Seal `key`'s bare private key (stored by a version before sealing)
/// under `kek`, in place. A key that is not the PKCS#8 key it should be
/// is left alone: [`load`] then fails to sign with it, loudly.
async fn seal_in_place(store: &Store, kek: &Kek, key: &SigningKey) -> Result<(), AuthError> {
    if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.private_key).is_err() {
        tracing::error!(kid = %key.kid, "a stored signing key is neither sealed nor a key");
        return Ok(());
    }
    let sealed = kek
        .seal(&key.private_key, &KeyPurpose::TokenSigning(key.kid.clone()))
        .map_err(|_| AuthError::KeyGeneration)?;
    if store
        .seal_signing_key(&key.kid, &key.private_key, &sealed)
        .await?
    {
        tracing::info!(kid = %key.kid, "signing key sealed with the key-encryption key");
    }
    Ok(())
}
