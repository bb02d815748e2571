//! The MQTT/TLS listener's configuration: the server certificate is the
//! operator's own (`--tls-cert`, `--tls-key`) or, by default, issued by the
//! platform root CA at every start (its key never touches the disk); device
//! certificates are checked by the PKI's verifier against the run-time set
//! of tenant CAs, so CAs added later are trusted without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Duration, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{TLS_CERT, TLS_KEY, TlsFiles};
use crate::datadir::DataDir;
use crate::error::Error;
use crate::pki_boot::Platform;

/// The platform root CA certificate, written into the data directory for
/// clients to trust (`mosquitto_pub --cafile`).
pub const ROOT_CA_FILE: &str = "ca.pem";

/// How long an issued server certificate is valid; a new one is issued at
/// every start, so this only bounds an uninterrupted run.
const SERVER_CERT_DAYS: i64 = 397;

/// The TLS configuration of the MQTT/TLS listener, and what a client should
/// trust to connect to it.
#[derive(Debug)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// The root CA (issued) or the operator's certificate (given) a client
    /// passes as its trust anchor.
    pub trust: PathBuf,
}

/// The operator's certificate files, read and checked before anything slow
/// happens at start.
#[derive(Debug)]
pub struct GivenCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

/// Reads `--tls-cert`/`--tls-key` when given.
pub fn read_given(files: Option<&TlsFiles>) -> Result<Option<GivenCert>, Error> {
    files
        .map(|files| {
            Ok(GivenCert {
                chain: read_chain(&files.cert)?,
                key: read_key(&files.key)?,
                cert_path: files.cert.clone(),
                key_path: files.key.clone(),
            })
        })
        .transpose()
}

/// The rustls server configuration for MQTT/TLS.
pub fn server_config(
    given: Option<GivenCert>,
    platform: &Platform,
    data_dir: &DataDir,
) -> Result<ServerTls, Error> {
    let root_pem_path = data_dir.path().join(ROOT_CA_FILE);
    data_dir
        .write_secret(ROOT_CA_FILE, platform.root.cert_pem().as_bytes())
        .map_err(|source| Error::TlsFileWrite {
            path: root_pem_path.clone(),
            source,
        })?;
    let (chain, key, trust, key_path) = match given {
        Some(given) => (
            given.chain,
            given.key,
            given.cert_path,
            Some(given.key_path),
        ),
        None => {
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
            names.extend(host_name().filter(|h| h != "localhost"));
            let cert = platform
                .root
                .issue_server_cert(&names, Utc::now(), Duration::days(SERVER_CERT_DAYS))
                .map_err(|e| Error::Tls(format!("issuing the server certificate: {e}")))?;
            (
                cert.chain_der.clone(),
                cert.private_key_der(),
                root_pem_path,
                None,
            )
        }
    };
    // The provider is named rather than taken from the process default, so
    // this works whatever else in the process installed one.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(pki::DeviceCertVerifier::new(platform.trust.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("TLS protocol versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| match &key_path {
            Some(key_path) => Error::TlsFileInvalid {
                path: trust.clone(),
                setting: TLS_CERT,
                message: format!("does not go with the key in {}: {e}", key_path.display()),
            },
            None => Error::Tls(format!("the issued server certificate: {e}")),
        })?;
    // A resumed TLS session skips the client-certificate verifier, so a
    // revoked certificate could get back in: no resumption.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(ServerTls {
        config: Arc::new(config),
        // Absolute, since clients run from anywhere.
        trust: std::fs::canonicalize(&trust).unwrap_or(trust),
    })
}

fn read_file(path: &Path, setting: crate::config::Setting) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::TlsFileRead {
        path: path.to_owned(),
        setting,
        source,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read_file(path, TLS_CERT)?;
    let invalid = |message: String| Error::TlsFileInvalid {
        path: path.to_owned(),
        setting: TLS_CERT,
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(invalid("holds no CERTIFICATE block".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = read_file(path, TLS_KEY)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| Error::TlsFileInvalid {
        path: path.to_owned(),
        setting: TLS_KEY,
        message: format!("not a PEM private key: {e}"),
    })
}

/// This machine's host name, when it is a valid DNS name (it goes into a
/// DNS SAN, which refuses anything else).
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn platform(dir: &DataDir) -> (Platform, store::testing::TestDb) {
        let db = store::testing::TestDb::sqlite().await;
        let storage = crate::config::StorageConfig {
            data_dir: dir.path().to_owned(),
            database_url: None,
            log_format: crate::cli::LogFormat::Pretty,
            kek_file: None,
        };
        let platform = crate::pki_boot::load(db.store(), &storage, "sqlite://test")
            .await
            .unwrap();
        (platform, db)
    }

    #[tokio::test]
    async fn issued_by_the_root_which_is_written_for_clients() {
        let root = tempfile::tempdir().unwrap();
        let dir = DataDir::open(root.path()).unwrap();
        let (platform, _db) = platform(&dir).await;
        let tls = server_config(None, &platform, &dir).unwrap();
        assert_eq!(
            tls.trust,
            std::fs::canonicalize(root.path().join(ROOT_CA_FILE)).unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(root.path().join(ROOT_CA_FILE)).unwrap(),
            platform.root.cert_pem()
        );
        assert!(tls.config.send_tls13_tickets == 0);
    }

    #[tokio::test]
    async fn given_files_are_used_and_bad_ones_name_the_flag() {
        let root = tempfile::tempdir().unwrap();
        let dir = DataDir::open(root.path()).unwrap();
        let (platform, _db) = platform(&dir).await;
        let made = platform
            .root
            .issue_server_cert(&["broker.example".into()], Utc::now(), Duration::days(1))
            .unwrap();
        let cert = root.path().join("cert.pem");
        let key = root.path().join("key.pem");
        std::fs::write(&cert, &made.chain_pem).unwrap();
        std::fs::write(&key, made.private_key_pem.expose()).unwrap();
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let tls = server_config(read_given(Some(&files)).unwrap(), &platform, &dir).unwrap();
        assert_eq!(tls.trust, std::fs::canonicalize(&cert).unwrap());

        std::fs::write(&key, "not a key").unwrap();
        let msg = read_given(Some(&files)).unwrap_err().to_string();
        assert!(
            msg.contains("--tls-key") && msg.contains("key.pem"),
            "{msg}"
        );
        let missing = TlsFiles {
            cert: root.path().join("missing.pem"),
            key,
        };
        let err = read_given(Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");
    }

    #[test]
    fn host_names_are_checked_before_they_become_sans() {
        // Whatever this machine is called, what comes back is a DNS name.
        if let Some(name) = host_name() {
            assert!(name.split('.').all(|l| !l.is_empty() && l.len() <= 63));
        }
    }
}
