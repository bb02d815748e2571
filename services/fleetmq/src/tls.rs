//! The MQTT/TLS server certificate: the operator's own (`--tls-cert`,
//! `--tls-key`), or one generated on first start into the data directory and
//! reused afterwards.
//!
//! The generated certificate is signed by a small local CA whose key is
//! thrown away once it has signed: clients trust `mqtts-ca.pem` (a CA, which
//! every TLS stack accepts as a trust anchor, unlike a self-signed leaf),
//! and nothing else can ever be signed with it. The PKI (issue 5) will have
//! the platform root CA sign this certificate instead; only
//! [`server_config`] needs to change for that.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{TLS_CERT, TLS_KEY, TlsFiles};
use crate::datadir::DataDir;
use crate::error::Error;

/// File names in the data directory.
pub const GENERATED_CA: &str = "mqtts-ca.pem";
pub const GENERATED_CERT: &str = "mqtts-server.pem";
pub const GENERATED_KEY: &str = "mqtts-server.key";

/// Years a generated certificate is valid; it is regenerated only when its
/// files are removed, so this is the longest an untouched install runs.
const VALID_YEARS: i32 = 10;

/// The TLS configuration of the MQTT/TLS listener, and what a client should
/// trust to connect to it.
#[derive(Debug)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// The CA certificate (generated) or the server certificate (given) a
    /// client passes as its trust anchor (`mosquitto_pub --cafile`).
    pub trust: PathBuf,
    /// Whether the certificate was generated on this start.
    pub generated: bool,
}

/// The rustls server configuration for MQTT/TLS: from `files` when given,
/// otherwise from the data directory's generated certificate (made now if
/// missing).
pub fn server_config(files: Option<&TlsFiles>, data_dir: &DataDir) -> Result<ServerTls, Error> {
    let (cert_path, key_path, trust, generated) = match files {
        Some(files) => (
            files.cert.clone(),
            files.key.clone(),
            files.cert.clone(),
            false,
        ),
        None => {
            let generated = ensure_generated(data_dir)?;
            (
                data_dir.path().join(GENERATED_CERT),
                data_dir.path().join(GENERATED_KEY),
                data_dir.path().join(GENERATED_CA),
                generated,
            )
        }
    };
    let chain = read_chain(&cert_path)?;
    let key = read_key(&key_path)?;
    // The provider is named rather than taken from the process default, so
    // this works whatever else in the process installed one.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("TLS protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::TlsFileInvalid {
            path: cert_path.clone(),
            setting: TLS_CERT,
            message: format!("does not go with the key in {}: {e}", key_path.display()),
        })?;
    Ok(ServerTls {
        config: Arc::new(config),
        // Absolute, since clients run from anywhere.
        trust: std::fs::canonicalize(&trust).unwrap_or(trust),
        generated,
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

/// Makes the certificate, its key and the CA certificate unless all three
/// exist. Returns whether it made them.
fn ensure_generated(data_dir: &DataDir) -> Result<bool, Error> {
    let present = [GENERATED_CA, GENERATED_CERT, GENERATED_KEY]
        .iter()
        .all(|name| data_dir.path().join(name).is_file());
    if present {
        return Ok(false);
    }
    let generated = generate(&host_name())?;
    let write = |name: &str, contents: &str| {
        data_dir
            .write_secret(name, contents.as_bytes())
            .map_err(|source| Error::TlsFileWrite {
                path: data_dir.path().join(name),
                source,
            })
    };
    // The key first: a crash in between leaves no certificate without it,
    // and the next start regenerates all three.
    write(GENERATED_KEY, &generated.key_pem)?;
    write(GENERATED_CERT, &generated.cert_pem)?;
    write(GENERATED_CA, &generated.ca_pem)?;
    tracing::info!(
        data_dir = %data_dir.path().display(),
        "generated the MQTT/TLS server certificate"
    );
    Ok(true)
}

/// A generated server certificate (PEM), its key, and the CA that signed it.
struct Generated {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn generate(host: &Option<String>) -> Result<Generated, Error> {
    let err = |e: rcgen::Error| Error::Tls(format!("generating the server certificate: {e}"));
    let year = current_year();
    let validity = |params: &mut CertificateParams| {
        params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
    };

    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fleetmq local MQTT/TLS CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca_params);
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    names.extend(host.iter().filter(|h| *h != "localhost").cloned());
    let mut params = CertificateParams::new(names).map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, host.as_deref().unwrap_or("localhost"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params);
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        // The chain a server sends: leaf, then the CA.
        cert_pem: format!("{}{}", cert.pem(), ca_cert.pem()),
        key_pem: key.serialize_pem(),
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

fn current_year() -> i32 {
    const SECS_PER_YEAR: u64 = 31_556_952; // 365.2425 days
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + i32::try_from(secs / SECS_PER_YEAR).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generated_once_into_the_data_dir_0600_and_reused() {
        let root = tempfile::tempdir().unwrap();
        let dir = DataDir::open(root.path()).unwrap();
        let first = server_config(None, &dir).unwrap();
        assert!(first.generated);
        assert_eq!(
            first.trust,
            std::fs::canonicalize(root.path().join(GENERATED_CA)).unwrap()
        );
        for name in [GENERATED_CA, GENERATED_CERT, GENERATED_KEY] {
            assert_eq!(mode(&root.path().join(name)), 0o600, "{name}");
        }
        let cert = std::fs::read(root.path().join(GENERATED_CERT)).unwrap();
        let again = server_config(None, &dir).unwrap();
        assert!(!again.generated);
        assert_eq!(
            std::fs::read(root.path().join(GENERATED_CERT)).unwrap(),
            cert
        );
    }

    #[test]
    fn given_files_are_used_and_bad_ones_name_the_flag() {
        let root = tempfile::tempdir().unwrap();
        let dir = DataDir::open(root.path()).unwrap();
        let made = generate(&Some("broker.example".into())).unwrap();
        let cert = root.path().join("cert.pem");
        let key = root.path().join("key.pem");
        std::fs::write(&cert, &made.cert_pem).unwrap();
        std::fs::write(&key, &made.key_pem).unwrap();
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let tls = server_config(Some(&files), &dir).unwrap();
        assert!(!tls.generated);
        assert_eq!(tls.trust, std::fs::canonicalize(&cert).unwrap());
        assert!(!root.path().join(GENERATED_KEY).exists());

        std::fs::write(&key, "not a key").unwrap();
        let msg = server_config(Some(&files), &dir).unwrap_err().to_string();
        assert!(
            msg.contains("--tls-key") && msg.contains("key.pem"),
            "{msg}"
        );
        let missing = TlsFiles {
            cert: root.path().join("missing.pem"),
            key,
        };
        let err = server_config(Some(&missing), &dir).unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");
    }

    #[test]
    fn host_names_are_checked_before_they_become_sans() {
        // Whatever this machine is called, what comes back is usable.
        if let Some(name) = host_name() {
            assert!(CertificateParams::new(vec![name]).is_ok());
        }
        assert!(current_year() >= 2025);
    }
}
