//! The platform root CA, tenant CAs and bring-your-own-CA registration
//! codes. Plain data: certificates as PEM, keys as the sealed bytes the
//! `pki` crate made (this crate never sees a key in the clear).

use chrono::{DateTime, Utc};

use crate::audit::audited_tx;
use crate::codec::{Ts, now};
use crate::error::{Violation, violation};
use crate::{Error, NewAuditEntry, Store};

/// A text column outside its CHECK list: only a bug or a hand edit can do it.
pub(crate) fn corrupt(column: &str, value: &str) -> Error {
    Error::Database(sqlx::Error::Decode(
        format!("unexpected {column} {value:?}").into(),
    ))
}

/// A failed write as the caller should see it: a unique violation becomes
/// `unique` and a foreign-key violation `foreign_key` (when given), anything
/// else the plain database error.
pub(crate) fn on_violation(
    e: sqlx::Error,
    unique: Option<Error>,
    foreign_key: Option<Error>,
) -> Error {
    match (violation(&e), unique, foreign_key) {
        (Some(Violation::Unique), Some(mapped), _) => mapped,
        (Some(Violation::ForeignKey), _, Some(mapped)) => mapped,
        _ => e.into(),
    }
}

pub(crate) fn tenant_not_found(tenant_id: &str) -> Error {
    Error::NotFound {
        kind: "tenant",
        id: tenant_id.to_owned(),
    }
}

pub(crate) fn device_not_found(tenant_id: &str, device_id: &str) -> Error {
    Error::NotFound {
        kind: "device",
        id: format!("{tenant_id}/{device_id}"),
    }
}

/// The platform root as stored. `Debug` leaves the sealed key out.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PlatformCa {
    pub cert_pem: String,
    /// Sealed under the KEK (`pki::Kek::seal`, purpose root-ca).
    pub sealed_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

debug_fields!(PlatformCa { created_at });

/// A Rust enum over a TEXT column with a CHECK list: `as_str` for binding,
/// and read straight from the column (`FromRow` fields), any other value
/// being corrupt.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub(crate) fn parse(s: &str) -> Result<Self, $crate::Error> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::pki::corrupt($what, other)),
                }
            }
        }

        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(Self::parse(<&'r str as sqlx::Decode<'r, DB>>::decode(value)?)?)
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(
    /// How a tenant CA came to be trusted.
    TenantCaKind, "tenant CA kind" {
        /// Made by the platform, signed by its root; the platform holds the key.
        Issued = "issued",
        /// The tenant's own CA (proof of possession); the tenant holds the key.
        Registered = "registered",
    }
);

text_enum!(
    /// Whether devices under a tenant CA are accepted.
    TenantCaStatus, "tenant CA status" {
        Active = "active",
        Disabled = "disabled",
    }
);

/// A tenant CA to store. `Debug` leaves the sealed key out.
#[derive(Clone, PartialEq, Eq)]
pub struct NewTenantCa {
    /// Subject key identifier, lower-case hex: the key devices' AKIs match.
    pub subject_key_id: String,
    pub tenant_id: String,
    pub kind: TenantCaKind,
    pub cert_pem: String,
    /// Present exactly when `kind` is `Issued`.
    pub sealed_key: Option<Vec<u8>>,
    pub subject: String,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    pub not_after: DateTime<Utc>,
}

debug_fields!(NewTenantCa {
    subject_key_id,
    tenant_id,
    kind
});

/// A stored tenant CA. `Debug` leaves the sealed key out.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantCa {
    pub subject_key_id: String,
    pub tenant_id: String,
    pub kind: TenantCaKind,
    pub cert_pem: String,
    pub sealed_key: Option<Vec<u8>>,
    pub subject: String,
    pub fingerprint: String,
    pub not_after: DateTime<Utc>,
    pub status: TenantCaStatus,
    /// The last CRL number handed out ([`Store::next_crl_number`]).
    pub crl_number: i64,
    pub created_at: DateTime<Utc>,
    /// A registered CA whose certificates create their device on first
    /// connect ([`Store::set_tenant_ca_jit`]).
    pub jit_registration: bool,
}

debug_fields!(TenantCa {
    subject_key_id,
    tenant_id,
    kind,
    status
});

macro_rules! ca_columns {
    () => {
        "subject_key_id, tenant_id, kind, cert_pem, sealed_key, subject, fingerprint, \
         not_after, status, crl_number, created_at, jit_registration"
    };
}

fn tenant_ca_not_found(tenant_id: &str, subject_key_id: &str) -> Error {
    Error::NotFound {
        kind: "tenant CA",
        id: format!("{tenant_id}/{subject_key_id}"),
    }
}

impl Store {
    /// The platform root, if one was stored.
    pub async fn platform_ca(&self) -> Result<Option<PlatformCa>, Error> {
        const SQL: &str = "SELECT cert_pem, sealed_key, created_at FROM platform_ca WHERE id = 1";
        Ok(sql!(self, fetch_optional as PlatformCa => SQL)?)
    }

    /// Store the platform root. There is only one: `AlreadyExists` if a
    /// root is stored (two nodes starting at once: the loser reloads it).
    #[tracing::instrument(skip_all)]
    pub async fn create_platform_ca(
        &self,
        cert_pem: &str,
        sealed_key: &[u8],
    ) -> Result<PlatformCa, Error> {
        const SQL: &str = "INSERT INTO platform_ca (id, cert_pem, sealed_key, created_at) \
                           VALUES (1, $1, $2, $3) RETURNING cert_pem, sealed_key, created_at";
        let row = sql!(self, fetch_one as PlatformCa => SQL, cert_pem, sealed_key, Ts(now()));
        row.map_err(|e| {
            on_violation(
                e,
                Some(Error::AlreadyExists {
                    kind: "platform CA",
                    id: "root".into(),
                }),
                None,
            )
        })
    }

    /// Store a tenant CA. `NotFound` for an unknown tenant, `AlreadyExists`
    /// if a CA with this subject key identifier is stored (for any tenant).
    #[tracing::instrument(skip_all, fields(tenant = %new.tenant_id, ca = %new.subject_key_id))]
    pub async fn create_tenant_ca(&self, new: &NewTenantCa) -> Result<TenantCa, Error> {
        const SQL: &str = concat!(
            "INSERT INTO tenant_cas (subject_key_id, tenant_id, kind, cert_pem, sealed_key, ",
            "subject, fingerprint, not_after, created_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
            ca_columns!()
        );
        let row = sql!(self, fetch_one as TenantCa => SQL, &new.subject_key_id, &new.tenant_id,
            new.kind.as_str(), &new.cert_pem, new.sealed_key.as_deref(), &new.subject,
            &new.fingerprint, Ts(new.not_after), Ts(now()));
        let unique = Error::AlreadyExists {
            kind: "tenant CA",
            id: new.subject_key_id.clone(),
        };
        let missing = tenant_not_found(&new.tenant_id);
        row.map_err(|e| on_violation(e, Some(unique), Some(missing)))
    }

    /// Tenant CAs, oldest first: one tenant's, or every tenant's (`None`,
    /// to load the trust set at start-up).
    pub async fn list_tenant_cas(&self, tenant_id: Option<&str>) -> Result<Vec<TenantCa>, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            ca_columns!(),
            " FROM tenant_cas WHERE ($1 IS NULL OR tenant_id = $1) ",
            "ORDER BY tenant_id, created_at, subject_key_id"
        );
        Ok(sql!(self, fetch_all as TenantCa => SQL, tenant_id)?)
    }

    /// One tenant CA by subject key identifier. `NotFound` unless the tenant has it.
    pub async fn get_tenant_ca(
        &self,
        tenant_id: &str,
        subject_key_id: &str,
    ) -> Result<TenantCa, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            ca_columns!(),
            " FROM tenant_cas WHERE tenant_id = $1 AND subject_key_id = $2"
        );
        let row = sql!(self, fetch_optional as TenantCa => SQL, tenant_id, subject_key_id)?;
        row.ok_or_else(|| tenant_ca_not_found(tenant_id, subject_key_id))
    }

    /// Enable or disable a tenant CA. `NotFound` unless the tenant has it.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, ca = %subject_key_id))]
    pub async fn set_tenant_ca_status(
        &self,
        tenant_id: &str,
        subject_key_id: &str,
        status: TenantCaStatus,
    ) -> Result<TenantCa, Error> {
        const SQL: &str = concat!(
            "UPDATE tenant_cas SET status = $3 WHERE tenant_id = $1 AND subject_key_id = $2 ",
            "RETURNING ",
            ca_columns!()
        );
        let row = sql!(self, fetch_optional as TenantCa => SQL, tenant_id, subject_key_id,
            status.as_str())?;
        row.ok_or_else(|| tenant_ca_not_found(tenant_id, subject_key_id))
    }

    /// Turn just-in-time registration on or off for a registered CA, with
    /// `audit` in the same transaction. `NotFound` unless the tenant has it;
    /// `InvalidDocument` for the platform-issued CA (its devices are
    /// registered before issuance).
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, ca = %subject_key_id))]
    pub async fn set_tenant_ca_jit(
        &self,
        tenant_id: &str,
        subject_key_id: &str,
        jit_registration: bool,
        audit: Option<&NewAuditEntry>,
    ) -> Result<TenantCa, Error> {
        const SQL: &str = concat!(
            "UPDATE tenant_cas SET jit_registration = $3 ",
            "WHERE tenant_id = $1 AND subject_key_id = $2 AND kind = 'registered' ",
            "RETURNING ",
            ca_columns!()
        );
        let row = audited_tx!(self, audit, Option::is_some, tx => sql!(in tx,
            fetch_optional as TenantCa => SQL, tenant_id, subject_key_id, jit_registration)?);
        match row {
            Some(row) => Ok(row),
            None => {
                // Missing, or the issued CA: tell which.
                self.get_tenant_ca(tenant_id, subject_key_id).await?;
                Err(Error::InvalidDocument {
                    kind: "tenant CA",
                    reason: "just-in-time registration is for registered CAs only",
                })
            }
        }
    }

    /// Delete a tenant CA (the certificates it issued stay listed, and are
    /// refused from then on), with `audit` in the same transaction.
    /// `NotFound` unless the tenant has it.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, ca = %subject_key_id))]
    pub async fn delete_tenant_ca(
        &self,
        tenant_id: &str,
        subject_key_id: &str,
        audit: Option<&NewAuditEntry>,
    ) -> Result<(), Error> {
        const SQL: &str = "DELETE FROM tenant_cas WHERE tenant_id = $1 AND subject_key_id = $2";
        let n = audited_tx!(self, audit, |n: &u64| *n > 0, tx => sql!(in tx, execute => SQL,
            tenant_id, subject_key_id)?);
        if n == 0 {
            return Err(tenant_ca_not_found(tenant_id, subject_key_id));
        }
        Ok(())
    }

    /// Take the next CRL number for a CA: one more than the last, atomically,
    /// so CRL numbers only grow even with several nodes.
    pub async fn next_crl_number(
        &self,
        tenant_id: &str,
        subject_key_id: &str,
    ) -> Result<i64, Error> {
        const SQL: &str = "UPDATE tenant_cas SET crl_number = crl_number + 1 \
                           WHERE tenant_id = $1 AND subject_key_id = $2 RETURNING crl_number";
        let n: Option<(i64,)> = sql!(self, fetch_optional as _ => SQL, tenant_id, subject_key_id)?;
        n.map(|(n,)| n)
            .ok_or_else(|| tenant_ca_not_found(tenant_id, subject_key_id))
    }

    /// Keep a bring-your-own-CA registration code until `expires_at`, with
    /// `audit` in the same transaction. `NotFound` for an unknown tenant.
    pub async fn create_ca_registration_code(
        &self,
        tenant_id: &str,
        code: &str,
        expires_at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> Result<(), Error> {
        const SQL: &str = "INSERT INTO ca_registration_codes (tenant_id, code, expires_at, created_at) \
                           VALUES ($1, $2, $3, $4)";
        let done = audited_tx!(self, audit, Result::is_ok, tx => sql!(in tx, execute => SQL,
            tenant_id, code, Ts(expires_at), Ts(now())));
        let unique = Error::AlreadyExists {
            kind: "CA registration code",
            id: tenant_id.to_owned(),
        };
        done.map(drop)
            .map_err(|e| on_violation(e, Some(unique), Some(tenant_not_found(tenant_id))))
    }

    /// Use up a registration code: true if the tenant had it and it had not
    /// expired at `at`. Either way it is gone afterwards (single use), and
    /// the tenant's expired codes are dropped too.
    pub async fn take_ca_registration_code(
        &self,
        tenant_id: &str,
        code: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, Error> {
        const TAKE: &str = "DELETE FROM ca_registration_codes \
                            WHERE tenant_id = $1 AND code = $2 AND expires_at > $3";
        const PURGE: &str = "DELETE FROM ca_registration_codes \
                             WHERE tenant_id = $1 AND (code = $2 OR expires_at <= $3)";
        let taken = sql!(self, execute => TAKE, tenant_id, code, Ts(at))?;
        sql!(self, execute => PURGE, tenant_id, code, Ts(at))?;
        Ok(taken == 1)
    }
}
