//! Signing keys: the keys the API signs its bearer tokens with. The newest
//! unretired key signs; every key still listed verifies, so tokens signed
//! before a rotation keep working until they expire.

use chrono::{DateTime, Utc};

use crate::codec::{Ts, now};
use crate::pki::on_violation;
use crate::{Error, Store};

const KIND: &str = "signing key";

/// One key. `Debug` leaves the private key out.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SigningKey {
    /// The JWT header `kid`.
    pub kid: String,
    /// JWS algorithm name, e.g. `ES256`.
    pub algorithm: String,
    /// PKCS#8 DER sealed with the key-encryption key by the API (rows
    /// from before sealing hold it bare until the server's next start
    /// seals them). Secret.
    pub private_key: Vec<u8>,
    /// Verification key bytes (for ES256: the uncompressed SEC1 point).
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// When a newer key took over signing.
    pub retired_at: Option<DateTime<Utc>>,
}

debug_fields!(SigningKey {
    kid,
    algorithm,
    created_at,
    retired_at
});

/// A key to store. `Debug` leaves the private key out.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSigningKey {
    pub kid: String,
    pub algorithm: String,
    pub private_key: Vec<u8>,
    pub public_key: Vec<u8>,
}

debug_fields!(NewSigningKey { kid, algorithm });

macro_rules! columns {
    () => {
        "kid, algorithm, private_key, public_key, created_at, retired_at"
    };
}

impl Store {
    /// Store a new (unretired) key. `AlreadyExists` if the kid is taken.
    #[tracing::instrument(skip_all, fields(kid = %new.kid))]
    pub async fn create_signing_key(&self, new: &NewSigningKey) -> Result<SigningKey, Error> {
        const SQL: &str = concat!(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at) ",
            "VALUES ($1, $2, $3, $4, $5) RETURNING ",
            columns!()
        );
        let row = sql!(self, fetch_one as SigningKey => SQL, &new.kid, &new.algorithm,
            &new.private_key, &new.public_key, Ts(now()));
        row.map_err(|e| on_violation(e, Some(Error::already_exists(KIND, new.kid.clone())), None))
    }

    /// Every stored key, oldest first (ties broken by kid).
    pub async fn list_signing_keys(&self) -> Result<Vec<SigningKey>, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM signing_keys ORDER BY created_at, kid"
        );
        Ok(sql!(self, fetch_all as SigningKey => SQL)?)
    }

    /// Mark every unretired key other than `keep` retired (it stops signing,
    /// keeps verifying). Returns how many were retired.
    #[tracing::instrument(skip_all, fields(kid = %keep))]
    pub async fn retire_signing_keys_except(&self, keep: &str) -> Result<u64, Error> {
        const SQL: &str =
            "UPDATE signing_keys SET retired_at = $2 WHERE kid <> $1 AND retired_at IS NULL";
        let n = sql!(self, execute => SQL, keep, Ts(now()))?;
        Ok(n)
    }

    /// Replace key `kid`'s private key `bare` by `sealed` (the same key
    /// sealed), unless another node did it first. Returns whether this
    /// call replaced it.
    #[tracing::instrument(skip_all, fields(kid = %kid))]
    pub async fn seal_signing_key(
        &self,
        kid: &str,
        bare: &[u8],
        sealed: &[u8],
    ) -> Result<bool, Error> {
        const SQL: &str =
            "UPDATE signing_keys SET private_key = $3 WHERE kid = $1 AND private_key = $2";
        let n = sql!(self, execute => SQL, kid, bare, sealed)?;
        Ok(n > 0)
    }

    /// Delete keys retired before `before` (no token they signed is still
    /// valid). Returns how many were deleted.
    pub async fn delete_signing_keys_retired_before(
        &self,
        before: DateTime<Utc>,
    ) -> Result<u64, Error> {
        const SQL: &str =
            "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1";
        let n = sql!(self, execute => SQL, Ts(before))?;
        Ok(n)
    }
}
