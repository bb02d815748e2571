//! The audit log: who did what to which resource, append-only.
//!
//! Entries are not tied to a tenant row (no foreign key): deleting a tenant
//! is itself audited and its trail must outlive it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;

use crate::codec::{Ts, now};
use crate::page::{CursorKind, Page, Paged, decode_int_cursor};
use crate::{Error, Store};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct AuditEntry {
    /// Increasing with insertion order.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `None` for platform-level actions.
    pub tenant_id: Option<String>,
    /// Who: e.g. `platform-admin`, `tenant-admin:alice`, `system`.
    pub actor: String,
    /// What: e.g. `tenant.create`, `device.update`.
    pub action: String,
    /// On what: e.g. `tenants/acme/devices/s-1`.
    pub target: String,
    pub request_id: Option<String>,
    /// Anything else worth keeping, never secrets.
    #[sqlx(json)]
    pub details: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub tenant_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub request_id: Option<String>,
    #[serde(default = "empty_object")]
    pub details: Value,
    /// The events the change causes: written with this entry, in the
    /// change's transaction, and announced once it commits
    /// ([`NewAuditEntry::with_event`]).
    #[serde(skip)]
    pub events: Vec<crate::ChangeEvent>,
}

/// Makes the audit entry of a change from what the change returned (say a
/// deleted row whose name the entry gives), inside its transaction.
pub type AuditOf<'a, T> = &'a (dyn Fn(&T) -> NewAuditEntry + Sync);

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

impl NewAuditEntry {
    /// An entry with no tenant, request id or details; set those fields after.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
    ) -> NewAuditEntry {
        NewAuditEntry {
            tenant_id: None,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            request_id: None,
            details: empty_object(),
            events: Vec::new(),
        }
    }
}

/// The columns of [`AuditEntry`], for `concat!`.
macro_rules! columns {
    () => {
        "id, at, tenant_id, actor, action, target, request_id, details"
    };
}

/// Appends `$entry` (a `&NewAuditEntry`) on `$conn` (a connection or
/// transaction of either backend), so a mutation and its audit entry commit
/// or roll back together. Evaluates to `Result<(), sqlx::Error>`.
macro_rules! append_audit_in {
    ($conn:expr, $entry:expr) => {{
        let entry: &$crate::NewAuditEntry = $entry;
        sqlx::query(
            "INSERT INTO audit_log (at, tenant_id, actor, action, target, request_id, details) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind($crate::codec::Ts($crate::codec::now()))
        .bind(entry.tenant_id.as_deref())
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(entry.request_id.as_deref())
        .bind(sqlx::types::Json(&entry.details))
        .execute($conn)
        .await
        .map(|_| ())
    }};
}
pub(crate) use append_audit_in;

/// Ends transaction `$tx` of a mutation of `$store`: when `$done` (the
/// change was made), appends `$audit` (an `Option<&NewAuditEntry>`) and
/// its events, commits, and announces the events, with `?` on failure;
/// otherwise leaves `$tx` to roll back when dropped.
macro_rules! commit_audited {
    ($store:expr, $tx:ident, $done:expr, $audit:expr) => {
        if $done {
            let mut committed = Vec::new();
            if let Some(entry) = $audit {
                let entry: &$crate::NewAuditEntry = entry;
                $crate::audit::append_audit_in!(&mut *$tx, entry)?;
                committed = $crate::change_events::write_events_in!(&mut *$tx, &entry.events)?;
            }
            $tx.commit().await?;
            $store.announce(committed);
        }
    };
}
pub(crate) use commit_audited;

/// Runs `$run` with `$conn` bound to a new transaction of `$store` and,
/// when `$done(&result)` (the change was made), appends `$audit` (an
/// `Option<&NewAuditEntry>`) and commits, so the change and its entry
/// persist together or not at all. Evaluates to the result of `$run`.
macro_rules! audited_tx {
    ($store:expr, $audit:expr, $done:expr, $conn:ident => $run:expr) => {
        $crate::audit::audited_tx!(@with $store, $conn => $run, out => (($done)(&out), $audit))
    };
    (@with $store:expr, $conn:ident => $run:expr, $out:ident => ($done:expr, $entry:expr)) => {
        on_pool!($store, pool => {
            let mut tx = pool.begin().await?;
            let $out = {
                let $conn = &mut *tx;
                $run
            };
            let entry = $entry;
            $crate::audit::commit_audited!($store, tx, $done, entry.as_ref());
            $out
        })
    };
}
pub(crate) use audited_tx;

/// [`audited_tx!`] for an entry made from the change: `$made(&result)` is
/// what the change made (`None`: nothing, and the transaction rolls back),
/// and `$audit`, an `Option<AuditOf<_>>`, makes the entry of it.
macro_rules! audited_of_tx {
    ($store:expr, $audit:expr, $made:expr, $conn:ident => $run:expr) => {
        $crate::audit::audited_tx!(@with $store, $conn => $run, out => (
            ($made)(&out).is_some(),
            ($made)(&out).zip($audit).map(|(made, audit)| audit(made))
        ))
    };
}
pub(crate) use audited_of_tx;

/// What a change that evaluates to a `Result` made, for [`audited_of_tx!`].
pub(crate) fn made_ok<T, E>(result: &Result<T, E>) -> Option<&T> {
    result.as_ref().ok()
}

impl Store {
    /// Record an entry (and its events); `id` and `at` are assigned here.
    #[tracing::instrument(skip_all, fields(action = %entry.action))]
    pub async fn append_audit(&self, entry: &NewAuditEntry) -> Result<AuditEntry, Error> {
        const SQL: &str = concat!(
            "INSERT INTO audit_log (at, tenant_id, actor, action, target, request_id, details) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
            columns!()
        );
        let row = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row = sql!(in &mut *tx, fetch_one as AuditEntry => SQL, Ts(now()),
                entry.tenant_id.as_deref(), &entry.actor, &entry.action, &entry.target,
                entry.request_id.as_deref(), Json(&entry.details))?;
            let committed = crate::change_events::write_events_in!(&mut *tx, &entry.events)?;
            tx.commit().await?;
            self.announce(committed);
            row
        });
        Ok(row)
    }

    /// Entries newest first: one tenant's (of the tenant living under that
    /// id, if one does: none of a deleted predecessor's), or with `None`
    /// every entry (platform-wide, including those of other tenants and of
    /// deleted ones).
    pub async fn list_audit(
        &self,
        tenant_id: Option<&str>,
        page: &Page,
    ) -> Result<Paged<AuditEntry>, Error> {
        // Ids start at 1, so "before i64::MAX" is the first page.
        let before = match &page.cursor {
            Some(cursor) => decode_int_cursor(CursorKind::Audit, cursor)?,
            None => i64::MAX,
        };
        let limit = page.fetch_limit();
        let entries = match tenant_id {
            Some(tenant_id) => {
                const SQL: &str = concat!(
                    "SELECT ",
                    columns!(),
                    " FROM audit_log WHERE tenant_id = $1 AND id < $2",
                    // A tenant deleted and created again under the same id
                    // starts a new trail: only entries since the living
                    // tenant's creation (its creation's own entry is written
                    // after its row, in the same transaction). Once deleted,
                    // the whole trail, for the platform.
                    " AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = $1 AND t.created_at > audit_log.at)",
                    " ORDER BY id DESC LIMIT $3"
                );
                sql!(self, fetch_all as AuditEntry => SQL, tenant_id, before, limit)?
            }
            None => {
                const SQL: &str = concat!(
                    "SELECT ",
                    columns!(),
                    " FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2"
                );
                sql!(self, fetch_all as AuditEntry => SQL, before, limit)?
            }
        };
        Ok(Paged::from_rows(entries, page, CursorKind::Audit, |e| {
            e.id.to_string()
        }))
    }
}
