//! Device certificates (from a server-made key or a CSR) and the broker's
//! server certificate.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::csr::{AcceptedKey, parse_csr};
use crate::der::{der_to_pem, fingerprint_sha256, from_unix, random_serial, serial_hex, to_offset};
use crate::names::spiffe_uri;
use crate::{Error, RootCa, TenantCa};

/// How far a device certificate's notBefore is set back, so a device whose
/// clock runs a little behind can use a certificate issued just now.
pub const DEVICE_CLOCK_SKEW: Duration = Duration::minutes(5);

/// What to put in a device certificate.
#[derive(Debug, Clone)]
pub struct DeviceCertParams<'a> {
    /// The SPIFFE trust domain (config; default [`crate::DEFAULT_TRUST_DOMAIN`]).
    pub trust_domain: &'a str,
    /// The device id: the CN and the SAN's last segment.
    pub device: &'a str,
    /// Requested validity.
    pub validity: Duration,
    /// The tenant's cap: longer requests are cut to it.
    pub max_validity: Duration,
    /// Issue time.
    pub now: DateTime<Utc>,
}

/// Where the certified key comes from.
#[derive(Debug, Clone, Copy)]
pub enum DeviceKey<'a> {
    /// The server makes an ECDSA P-256 key and returns it once.
    Generate,
    /// A PEM PKCS#10 request; only its (verified) public key is used.
    Csr(&'a str),
}

/// A PEM private key. Zeroed on drop; `Debug` does not show it.
pub struct SecretPem(Zeroizing<String>);

impl SecretPem {
    /// The PEM text, to hand to its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPem(<redacted>)")
    }
}

/// A newly issued device certificate: what the API returns and the store keeps.
#[derive(Debug)]
pub struct IssuedDeviceCert {
    /// Serial, lower-case hex (see [`crate::serial_hex`]).
    pub serial: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The certificate, DER.
    pub certificate_der: CertificateDer<'static>,
    /// Tenant CA then root, PEM.
    pub chain_pem: String,
    /// PKCS#8 PEM of the key, only when the server made it.
    pub private_key_pem: Option<SecretPem>,
    /// Start of validity (backdated by [`DEVICE_CLOCK_SKEW`]).
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint_sha256: String,
    /// The certified key's type.
    pub key: AcceptedKey,
}

impl TenantCa {
    /// Issue a device certificate: CN = device, O = tenant, URI SAN
    /// `spiffe://{domain}/tenant/{t}/device/{d}`, EKU clientAuth, KeyUsage
    /// digitalSignature, CA:FALSE, random 128-bit serial, AKI and SKI.
    /// Validity is `min(validity, max_validity)`, never past this CA.
    #[tracing::instrument(skip_all, fields(tenant = %self.tenant(), device = %params.device))]
    pub fn issue_device_cert(
        &self,
        params: &DeviceCertParams<'_>,
        key: DeviceKey<'_>,
    ) -> Result<IssuedDeviceCert, Error> {
        let uri = spiffe_uri(params.trust_domain, self.tenant(), params.device)?;
        if params.validity <= Duration::zero() || params.max_validity <= Duration::zero() {
            return Err(Error::InvalidValidity {
                reason: "must be positive",
            });
        }
        let not_before = params.now - DEVICE_CLOCK_SKEW;
        let not_after =
            (params.now + params.validity.min(params.max_validity)).min(self.not_after());
        if not_after <= params.now {
            return Err(Error::InvalidValidity {
                reason: "the tenant CA has expired",
            });
        }
        let serial = random_serial()?;
        let mut cert_params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, params.device);
        name.push(DnType::OrganizationName, self.tenant());
        cert_params.distinguished_name = name;
        cert_params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
        // ExplicitNoCa: basicConstraints CA:FALSE, and rcgen adds the SKI.
        cert_params.is_ca = IsCa::ExplicitNoCa;
        cert_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        cert_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        cert_params.use_authority_key_identifier_extension = true;
        cert_params.serial_number = Some(SerialNumber::from_slice(&serial));
        cert_params.not_before = to_offset(not_before)?;
        cert_params.not_after = to_offset(not_after)?;

        let (cert, private_key_pem, kind) = match key {
            DeviceKey::Generate => {
                let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
                let cert = cert_params.signed_by(&key, self.issuer())?;
                let pem = SecretPem(Zeroizing::new(key.serialize_pem()));
                (cert, Some(pem), AcceptedKey::EcdsaP256)
            }
            DeviceKey::Csr(pem) => {
                let public_key = parse_csr(pem)?;
                let cert = cert_params.signed_by(&public_key, self.issuer())?;
                (cert, None, public_key.kind)
            }
        };
        let der = cert.der().clone();
        let issued = IssuedDeviceCert {
            serial: serial_hex(&serial),
            certificate_pem: der_to_pem(&der),
            fingerprint_sha256: fingerprint_sha256(&der),
            certificate_der: der,
            chain_pem: self.chain_pem(),
            private_key_pem,
            not_before: from_unix(not_before.timestamp()),
            not_after: from_unix(not_after.timestamp()),
            key: kind,
        };
        tracing::info!(serial = %issued.serial, not_after = %issued.not_after, "device certificate issued");
        Ok(issued)
    }
}

/// The broker's TLS server certificate (ECDSA P-256, signed by the root).
pub struct ServerCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Certificate then root, PEM (what the server sends).
    pub chain_pem: String,
    /// The certificate chain, DER, for rustls.
    pub chain_der: Vec<CertificateDer<'static>>,
    /// PKCS#8 PEM of the key.
    pub private_key_pem: SecretPem,
    private_key_der: Zeroizing<Vec<u8>>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl ServerCert {
    /// The private key for rustls' `with_single_cert`.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.private_key_der.to_vec()))
    }
}

impl RootCa {
    /// A server certificate for `names` (DNS names or IP addresses; the
    /// first DNS name, else the first address, is the CN), EKU serverAuth.
    pub fn issue_server_cert(
        &self,
        names: &[String],
        now: DateTime<Utc>,
        validity: Duration,
    ) -> Result<ServerCert, Error> {
        if validity <= Duration::zero() {
            return Err(Error::InvalidValidity {
                reason: "must be positive",
            });
        }
        let first = names.first().ok_or(Error::InvalidServerName {
            name: String::new(),
        })?;
        let mut sans = Vec::with_capacity(names.len());
        for name in names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) if is_dns_name(name) => SanType::DnsName(name.as_str().try_into()?),
                Err(_) => return Err(Error::InvalidServerName { name: name.clone() }),
            };
            sans.push(san);
        }
        let not_after = (now + validity).min(self.not_after());
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let cn = names
            .iter()
            .find(|n| n.parse::<IpAddr>().is_err())
            .unwrap_or(first);
        dn.push(DnType::CommonName, cn.as_str());
        dn.push(DnType::OrganizationName, "fleetmq");
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        params.not_before = to_offset(now - DEVICE_CLOCK_SKEW)?;
        params.not_after = to_offset(not_after)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, self.issuer())?;
        let cert_pem = der_to_pem(cert.der());
        Ok(ServerCert {
            chain_pem: format!("{cert_pem}{}", self.cert_pem()),
            cert_pem,
            chain_der: vec![cert.der().clone(), self.cert_der().clone()],
            private_key_pem: SecretPem(Zeroizing::new(key.serialize_pem())),
            private_key_der: Zeroizing::new(key.serialize_der()),
            not_after: from_unix(not_after.timestamp()),
        })
    }
}

/// A DNS name (optionally with a leading `*.` label): letters, digits, `-`
/// and dots, labels of 1-63, at most 253 in all.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Fixture;
    use rcgen::PublicKeyData;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::*;

    #[test]
    fn device_cert_has_every_field_the_platform_promises() {
        let f = Fixture::new();
        let issued = f.issue("acme", "sensor-1", DeviceKey::Generate);
        let (_, cert) = X509Certificate::from_der(&issued.certificate_der).unwrap();
        assert_eq!(crate::der::common_name(&cert).unwrap(), "sensor-1");
        let org = cert.subject().iter_organization().next().unwrap();
        assert_eq!(org.as_str().unwrap(), "acme");
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            san.general_names,
            vec![GeneralName::URI(
                "spiffe://fleetmq.local/tenant/acme/device/sensor-1"
            )]
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
        let serial = cert.raw_serial();
        assert!(serial.len() == 16 || (serial.len() == 17 && serial[0] == 0));
        assert_eq!(serial_hex(serial), issued.serial);
        assert_eq!(
            crate::der::authority_key_id(&cert).unwrap(),
            f.tenant("acme").subject_key_id()
        );
        assert!(crate::der::subject_key_id(&cert).is_some());
        assert_eq!(
            issued.not_before.timestamp(),
            cert.validity().not_before.timestamp()
        );
        assert_eq!(
            issued.not_after.timestamp(),
            cert.validity().not_after.timestamp()
        );
        assert_eq!(issued.fingerprint_sha256.len(), 64);
        let (_, ca) = X509Certificate::from_der(f.tenant("acme").cert_der()).unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
        let key = issued.private_key_pem.as_ref().unwrap();
        assert!(key.expose().starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{issued:?}").contains("BEGIN PRIVATE KEY"));
        assert_eq!(issued.chain_pem, f.tenant("acme").chain_pem());
    }

    #[test]
    fn validity_is_capped_and_backdated() {
        let f = Fixture::new();
        let now = Utc::now();
        let params = DeviceCertParams {
            trust_domain: "fleetmq.local",
            device: "d",
            validity: Duration::days(3650),
            max_validity: Duration::days(30),
            now,
        };
        let issued = f
            .tenant("acme")
            .issue_device_cert(&params, DeviceKey::Generate)
            .unwrap();
        assert_eq!(
            issued.not_after.timestamp(),
            (now + Duration::days(30)).timestamp()
        );
        assert_eq!(
            issued.not_before.timestamp(),
            (now - DEVICE_CLOCK_SKEW).timestamp()
        );
        let zero = DeviceCertParams {
            validity: Duration::zero(),
            ..params.clone()
        };
        assert!(matches!(
            f.tenant("acme")
                .issue_device_cert(&zero, DeviceKey::Generate),
            Err(Error::InvalidValidity { .. })
        ));
        let bad_device = DeviceCertParams {
            device: "a/b",
            ..params
        };
        assert!(matches!(
            f.tenant("acme")
                .issue_device_cert(&bad_device, DeviceKey::Generate),
            Err(Error::InvalidDeviceId { .. })
        ));
    }

    #[test]
    fn csr_key_is_certified_and_its_names_ignored() {
        let f = Fixture::new();
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut req = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
        req.distinguished_name
            .push(DnType::CommonName, "other-device");
        req.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let csr = req.serialize_request(&key).unwrap().pem().unwrap();
        let issued = f.issue("acme", "d1", DeviceKey::Csr(&csr));
        assert!(issued.private_key_pem.is_none());
        assert_eq!(issued.key, AcceptedKey::Ed25519);
        let (_, cert) = X509Certificate::from_der(&issued.certificate_der).unwrap();
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
        assert_eq!(crate::der::common_name(&cert).unwrap(), "d1");
        assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names.len(), 1);
        let err = f
            .tenant("acme")
            .issue_device_cert(&f.params("d1"), DeviceKey::Csr("junk"))
            .unwrap_err();
        assert!(matches!(err, Error::Csr(crate::CsrError::Malformed { .. })));
    }

    #[test]
    fn server_cert_names_and_usage() {
        let f = Fixture::new();
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let server = f
            .root
            .issue_server_cert(&names, Utc::now(), Duration::days(365))
            .unwrap();
        let (_, cert) = X509Certificate::from_der(&server.chain_der[0]).unwrap();
        assert_eq!(crate::der::common_name(&cert).unwrap(), "localhost");
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names.len(), 2);
        assert!(!format!("{server:?}").contains("PRIVATE"));
        for bad in ["under_score.example", "a..b", "-x.example"] {
            assert!(matches!(
                f.root
                    .issue_server_cert(&[bad.to_owned()], Utc::now(), Duration::days(1)),
                Err(Error::InvalidServerName { .. })
            ));
        }
        assert!(
            f.root
                .issue_server_cert(&[], Utc::now(), Duration::days(1))
                .is_err()
        );
    }
}
