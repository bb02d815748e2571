//! Idempotency keys: the first response to a POST sent with an
//! `Idempotency-Key`, kept so that a retry gets it again instead of doing
//! the work twice.
//!
//! A record is claimed before the request runs ([`Store::claim_idempotency_key`],
//! `status` NULL while it is in flight), completed with the response
//! ([`Store::complete_idempotency_key`]), or released if the request failed
//! in a way worth retrying ([`Store::release_idempotency_key`]).

use chrono::{DateTime, Utc};

use crate::codec::{Ts, now};
use crate::{Error, Store};

/// A claimed key: the request that claimed it and, once complete, its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Tenant id the request was about, `""` for platform-level requests.
    pub scope: String,
    pub key: String,
    /// Who sent the first request.
    pub actor: String,
    /// Fingerprint of the first request (method, path, body).
    pub request_hash: String,
    /// `None` while the first request is in flight.
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub body: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

/// What [`Store::claim_idempotency_key`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key was free and is now ours: run the request.
    Claimed,
    /// Someone claimed it first: here is their record.
    Existing(IdempotencyRecord),
}

#[derive(sqlx::FromRow)]
struct IdempotencyRow {
    scope: String,
    key: String,
    actor: String,
    request_hash: String,
    status: Option<i32>,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
    created_at: Ts,
}

impl From<IdempotencyRow> for IdempotencyRecord {
    fn from(r: IdempotencyRow) -> Self {
        IdempotencyRecord {
            scope: r.scope,
            key: r.key,
            actor: r.actor,
            request_hash: r.request_hash,
            status: r.status.and_then(|s| u16::try_from(s).ok()),
            content_type: r.content_type,
            body: r.body,
            created_at: r.created_at.0,
        }
    }
}

impl Store {
    /// Claim `(scope, key)` for a request, or return the record of whoever
    /// claimed it first.
    pub async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        actor: &str,
        request_hash: &str,
    ) -> Result<IdempotencyClaim, Error> {
        const INSERT: &str = "INSERT INTO idempotency_keys \
            (scope, key, actor, request_hash, created_at) VALUES ($1, $2, $3, $4, $5) \
            ON CONFLICT (scope, key) DO NOTHING";
        const SELECT: &str = "SELECT scope, key, actor, request_hash, status, content_type, \
            body, created_at FROM idempotency_keys WHERE scope = $1 AND key = $2";
        let inserted = sql!(self, execute => INSERT, scope, key, actor, request_hash, Ts(now()))?;
        if inserted == 1 {
            return Ok(IdempotencyClaim::Claimed);
        }
        let row = sql!(self, fetch_optional as IdempotencyRow => SELECT, scope, key)?;
        match row {
            Some(row) => Ok(IdempotencyClaim::Existing(row.into())),
            // Released between our insert and select: the caller may retry.
            None => Err(Error::not_found("idempotency key", key.to_owned())),
        }
    }

    /// Store the response of the request that claimed `(scope, key)`.
    pub async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(), Error> {
        const SQL: &str = "UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5 \
            WHERE scope = $1 AND key = $2";
        sql!(self, execute => SQL, scope, key, i32::from(status), content_type, body)?;
        Ok(())
    }

    /// Forget `(scope, key)`, so that a retry runs the request again.
    pub async fn release_idempotency_key(&self, scope: &str, key: &str) -> Result<(), Error> {
        const SQL: &str = "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2";
        sql!(self, execute => SQL, scope, key)?;
        Ok(())
    }

    /// Forget keys claimed before `before`. Returns how many.
    pub async fn purge_idempotency_keys_before(&self, before: DateTime<Utc>) -> Result<u64, Error> {
        const SQL: &str = "DELETE FROM idempotency_keys WHERE created_at < $1";
        let n = sql!(self, execute => SQL, Ts(before))?;
        Ok(n)
    }
}
