//! The platform PKI at start: the key-encryption key, the root CA (made on
//! first start and stored sealed, so every node on one database shares it)
//! and the run-time trust set of every tenant CA the broker accepts.

use std::path::Path;
use std::sync::Arc;

use chrono::{Duration, Utc};
use pki::{Kek, RootCa, TrustRegistry};

use crate::config::StorageConfig;
use crate::error::Error;

/// The KEK's file in the data directory (hex, 0600).
pub const KEK_FILE: &str = "kek.hex";

/// The SPIFFE trust domain in device certificates' URI SANs.
pub const TRUST_DOMAIN: &str = "fleetmq.local";

/// How long a generated root CA is valid.
const ROOT_VALIDITY_DAYS: i64 = 20 * 365;

/// What the rest of the process needs of the PKI.
#[derive(Clone)]
pub struct Platform {
    pub root: Arc<RootCa>,
    pub kek: Arc<Kek>,
    pub trust: TrustRegistry,
    pub trust_domain: String,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("trust_domain", &self.trust_domain)
            .field("trusted_cas", &self.trust.len())
            .finish_non_exhaustive()
    }
}

/// Loads (or on the first start on a database creates) the KEK and the
/// root CA, and trusts every active tenant CA in the database.
///
/// Once the database holds a root CA, the KEK is only ever read: a node
/// whose key is missing or another one refuses to start, having created
/// nothing (every node on one database shares the first node's key; one
/// with its own would be a second platform).
pub async fn load(
    store: &store::Store,
    storage: &StorageConfig,
    url: &str,
) -> Result<Platform, Error> {
    let kek_path = storage.kek_path();
    let (kek, root) = match store
        .platform_ca()
        .await
        .map_err(|e| Error::store(url, e))?
    {
        Some(row) => {
            let kek = read_kek(&kek_path)?;
            let root = RootCa::from_sealed(&row.cert_pem, &row.sealed_key, &kek)
                .map_err(|e| kek_mismatch(&kek_path, &e))?;
            (kek, root)
        }
        None => {
            // The first node: the key is made in the data dir, unless
            // given with --kek-file (then it must exist).
            let kek = match storage.kek_file {
                Some(_) => read_kek(&kek_path)?,
                None => Kek::load_or_create_file(&kek_path)
                    .map_err(|e| Error::Pki(format!("{}: {e}", kek_path.display())))?,
            };
            let root = create_root(store, &kek, &kek_path, url).await?;
            (kek, root)
        }
    };
    let trust = TrustRegistry::new(root.cert_der().clone(), TRUST_DOMAIN)
        .map_err(|e| Error::Pki(format!("root CA: {e}")))?;
    let cas = store
        .list_tenant_cas(None)
        .await
        .map_err(|e| Error::store(url, e))?;
    api::trust_stored_cas(&trust, &cas);
    tracing::info!(trusted_tenant_cas = trust.len(), "PKI ready");
    Ok(Platform {
        root: Arc::new(root),
        kek: Arc::new(kek),
        trust,
        trust_domain: TRUST_DOMAIN.to_owned(),
    })
}

/// The KEK from `path`, which must exist.
fn read_kek(path: &Path) -> Result<Kek, Error> {
    Kek::load_file(path).map_err(|e| match e {
        pki::Error::KekFile { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::KekMissing {
                path: path.to_owned(),
            }
        }
        other => Error::Pki(format!("{}: {other}", path.display())),
    })
}

fn kek_mismatch(path: &Path, e: &pki::Error) -> Error {
    Error::KekMismatch {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

async fn create_root(
    store: &store::Store,
    kek: &Kek,
    kek_path: &Path,
    url: &str,
) -> Result<RootCa, Error> {
    let root = RootCa::generate(Utc::now(), Duration::days(ROOT_VALIDITY_DAYS))
        .map_err(|e| Error::Pki(format!("generating the root CA: {e}")))?;
    let sealed = root
        .seal_key(kek)
        .map_err(|e| Error::Pki(format!("sealing the root CA key: {e}")))?;
    match store.create_platform_ca(root.cert_pem(), &sealed).await {
        Ok(_) => {
            tracing::info!("generated the platform root CA");
            Ok(root)
        }
        // Another node made it first: use theirs.
        Err(store::Error::AlreadyExists { .. }) => {
            let row = store
                .platform_ca()
                .await
                .map_err(|e| Error::store(url, e))?
                .ok_or_else(|| Error::Pki("the root CA vanished while starting".into()))?;
            RootCa::from_sealed(&row.cert_pem, &row.sealed_key, kek)
                .map_err(|e| kek_mismatch(kek_path, &e))
        }
        Err(e) => Err(Error::store(url, e)),
    }
}
