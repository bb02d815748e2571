//! [`PlatformAuthenticator`]: the broker's [`Authenticator`] for the
//! platform. A TLS client certificate wins over a user name; then
//! `{device}@{tenant}` with the device's password; then a tenant's service
//! credential by user name.

use std::sync::Arc;

use async_trait::async_trait;
use broker::{AuthError, AuthRequest, Authenticator, Identity, TenantId};
use chrono::Utc;
use rustls_pki_types::CertificateDer;
use store::{CertificateStatus, CredentialScope, PublishLimitSettings};

use crate::cache::PrincipalRules;
use crate::limits::broker_limits;
use crate::password::parse_device_username;
use crate::password_checks::{CheckRefused, PasswordCheckLimits, PasswordChecks};
use crate::policy::PolicyTemplate;
use crate::{AccessCache, AccessError, Refusal};

/// The principal of a tenant's service credential `name`. The prefix keeps
/// credentials apart from devices (`:` is not allowed in device ids), so a
/// device can never be given a credential's rules or the reverse.
pub fn service_principal(name: &str) -> String {
    format!("service:{name}")
}

/// The principal (and MQTT user name) of platform service credential
/// `name`: `platform:{name}`. `:` is in no device id, so it is never read
/// as `{device}@{tenant}`, and `platform:` is not `service:`, so it never
/// names a tenant's credential.
pub fn platform_principal(name: &str) -> String {
    format!("{PLATFORM_PREFIX}{name}")
}

const PLATFORM_PREFIX: &str = "platform:";

/// Authenticates devices (certificate or password) and service credentials
/// against the store, through the [`AccessCache`].
#[derive(Debug, Clone)]
pub struct PlatformAuthenticator {
    trust: pki::TrustRegistry,
    cache: AccessCache,
    jit: Option<crate::jit::DeviceCreated>,
    checks: Arc<PasswordChecks>,
}

/// The fairness key of password checks for users that name no existing
/// device or credential: a flood of made-up names waits in its own queue,
/// not in the queue of the tenant it claims.
const UNKNOWN_USERS: &str = "";

/// Who the refusal is about, for the log line.
#[derive(Default)]
struct Subject<'a> {
    tenant: Option<&'a str>,
    device: Option<&'a str>,
}

pub(crate) enum Outcome {
    Refused(Refusal),
    Failed(AccessError),
}

impl From<Refusal> for Outcome {
    fn from(r: Refusal) -> Outcome {
        Outcome::Refused(r)
    }
}

impl From<AccessError> for Outcome {
    fn from(e: AccessError) -> Outcome {
        Outcome::Failed(e)
    }
}

impl From<store::Error> for Outcome {
    fn from(e: store::Error) -> Outcome {
        Outcome::Failed(e.into())
    }
}

fn tenant_id(tenant: &str) -> Result<TenantId, Outcome> {
    // Ids come from our CA or store, already validated; a mismatch between
    // the two rule sets is a bug on our side, not the client's.
    TenantId::parse(tenant)
        .map_err(|e| Outcome::Failed(AccessError::InvalidTenantId(format!("{tenant:?}: {e}"))))
}

impl PlatformAuthenticator {
    /// Identifies certificates with `trust` (the registry the TLS verifier
    /// reads too) and looks devices up through `cache`.
    pub fn new(trust: pki::TrustRegistry, cache: AccessCache) -> PlatformAuthenticator {
        PlatformAuthenticator {
            trust,
            cache,
            jit: None,
            checks: Arc::new(PasswordChecks::new(PasswordCheckLimits::default())),
        }
    }

    /// Run password checks in `checks` (bounded, fair per tenant, with a
    /// failure budget per address) rather than in a default one.
    #[must_use]
    pub fn with_password_checks(mut self, checks: Arc<PasswordChecks>) -> PlatformAuthenticator {
        self.checks = checks;
        self
    }

    /// Check `password` against `hash` (the decoy's time when `None`) in
    /// the bounded pool, queued under `tenant`.
    async fn check(
        &self,
        request: &AuthRequest,
        tenant: &str,
        password: bytes::Bytes,
        hash: Option<String>,
    ) -> Result<bool, Outcome> {
        self.checks
            .verify(tenant, request.peer.ip(), password, hash)
            .await
            .map_err(|refused| {
                Outcome::Refused(match refused {
                    CheckRefused::Busy => Refusal::ChecksBusy,
                    CheckRefused::OverBudget => Refusal::AddressOverBudget,
                })
            })
    }

    /// Tell `hook` about devices created just in time (the binary turns
    /// them into `device.created` events).
    #[must_use]
    pub fn on_device_created(mut self, hook: crate::jit::DeviceCreated) -> PlatformAuthenticator {
        self.jit = Some(hook);
        self
    }

    async fn by_certificate(
        &self,
        request: &AuthRequest,
        chain: &[bytes::Bytes],
        identity_out: &mut Option<pki::DeviceIdentity>,
    ) -> Result<Identity, Outcome> {
        let chain: Vec<CertificateDer<'_>> = chain
            .iter()
            .map(|c| CertificateDer::from(c.as_ref()))
            .collect();
        let id = self
            .trust
            .identify(&chain, Utc::now())
            .map_err(Refusal::Certificate)?;
        let id = identity_out.insert(id);
        let (tenant, device) = (id.tenant.as_str(), id.device.as_str());
        let record = self.cache.certificate(tenant, &id.serial).await?;
        let issued_at = match (&record, id.issuer_kind) {
            (Some(cert), _) => {
                if cert.device != device {
                    return Err(Refusal::SerialOfAnotherDevice {
                        serial: id.serial.clone(),
                        recorded: cert.device.clone(),
                    }
                    .into());
                }
                if cert.status == CertificateStatus::Revoked {
                    return Err(Refusal::Revoked {
                        serial: id.serial.clone(),
                    }
                    .into());
                }
                cert.issued_at
            }
            // Certificates from a tenant's own CA are not issued by us, so
            // never on record: their notBefore is when they were issued.
            (None, pki::CaKind::Registered) => id.not_before,
            (None, pki::CaKind::Issued) => {
                return Err(Refusal::UnknownSerial {
                    serial: id.serial.clone(),
                }
                .into());
            }
        };
        let entry = match self.cache.device(tenant, device).await? {
            Some(entry) => entry,
            None => {
                crate::jit::register(&self.cache, self.jit.as_ref(), id).await?;
                self.cache
                    .device(tenant, device)
                    .await?
                    .ok_or(Refusal::UnknownDevice)?
            }
        };
        if !entry.enabled {
            return Err(Refusal::DeviceDisabled.into());
        }
        if let Some(floor) = entry.floors.effective()
            && issued_at < floor
        {
            return Err(Refusal::BelowFloor {
                serial: id.serial.clone(),
                issued_at,
                floor,
            }
            .into());
        }
        let identity = self
            .admit_device(request, tenant, device, entry.limits)
            .await?;
        self.cache.record_cert_session(tenant, device, &id.serial);
        Ok(identity)
    }

    /// The last checks for a device that proved who it is: the client id
    /// is its id; then its tenant's policies are made ready. Its publish
    /// limits (from the cached device entry) go with the identity.
    async fn admit_device(
        &self,
        request: &AuthRequest,
        tenant: &str,
        device: &str,
        limits: Option<PublishLimitSettings>,
    ) -> Result<Identity, Outcome> {
        if request.client_id != device {
            return Err(Refusal::ClientIdNotDevice {
                client_id: request.client_id.clone(),
            }
            .into());
        }
        self.cache.ensure_policies(tenant).await?;
        self.cache
            .set_principal(tenant, device, PrincipalRules::Device);
        Ok(Identity {
            tenant: tenant_id(tenant)?,
            principal: device.to_owned(),
            limits: limits.as_ref().map(|l| Box::new(broker_limits(l))),
        })
    }

    async fn by_password<'a>(
        &self,
        request: &'a AuthRequest,
        username: &'a str,
        password: bytes::Bytes,
        subject: &mut Subject<'a>,
    ) -> Result<Identity, Outcome> {
        if let Some((device, tenant)) = parse_device_username(username) {
            subject.tenant = Some(tenant);
            subject.device = Some(device);
            let entry = self.cache.device(tenant, device).await?;
            let hash = match entry {
                Some(_) => {
                    self.cache
                        .store()
                        .device_password_hash(tenant, device)
                        .await?
                }
                None => None,
            };
            let refusal = match (&entry, &hash) {
                (None, _) => Some(Refusal::UnknownDevice),
                (Some(_), None) => Some(Refusal::NoPassword),
                _ => None,
            };
            let queue = if entry.is_some() {
                tenant
            } else {
                UNKNOWN_USERS
            };
            if !self.check(request, queue, password, hash).await? {
                return Err(refusal.unwrap_or(Refusal::WrongPassword).into());
            }
            let Some(entry) = entry.filter(|e| e.enabled) else {
                return Err(Refusal::DeviceDisabled.into());
            };
            return self
                .admit_device(request, tenant, device, entry.limits)
                .await;
        }
        if username.starts_with(PLATFORM_PREFIX) {
            return self
                .by_platform_credential(request, username, password)
                .await;
        }
        let credential = self
            .cache
            .store()
            .service_credential_by_username(username)
            .await?;
        let login = match &credential {
            Some(c) => Some(ServiceLogin {
                // Never empty: this is the tenants' table.
                tenant: tenant_id(c.scope.tenant_id().unwrap_or_default())?,
                name: &c.name,
                password_hash: &c.password_hash,
                publish: &c.publish,
                subscribe: &c.subscribe,
            }),
            None => None,
        };
        // Service credentials are the tenant's own backends: the platform
        // default limits apply, not the devices'.
        let identity = self
            .admit_service(request, password, login, service_principal)
            .await?;
        // A device's id belongs to the device (issue 13, item 4): checked
        // after the password, so the answer tells a stranger nothing.
        if self
            .cache
            .device(identity.tenant.as_str(), &request.client_id)
            .await?
            .is_some()
        {
            return Err(Refusal::ClientIdOfDevice {
                client_id: request.client_id.clone(),
            }
            .into());
        }
        Ok(identity)
    }

    /// A platform service credential: the client lives in the platform
    /// namespace, where every tenant is mounted under its id; its filters
    /// apply to that mounted topic space, with the platform default limits.
    async fn by_platform_credential(
        &self,
        request: &AuthRequest,
        username: &str,
        password: bytes::Bytes,
    ) -> Result<Identity, Outcome> {
        let credential = self
            .cache
            .store()
            .platform_credential_by_username(username)
            .await?;
        let login = credential.as_ref().map(|c| ServiceLogin {
            tenant: TenantId::platform(),
            name: &c.name,
            password_hash: &c.password_hash,
            publish: &c.publish,
            subscribe: &c.subscribe,
        });
        self.admit_service(request, password, login, platform_principal)
            .await
    }

    /// Checks the password of a service credential (the decoy's time when
    /// there is none) and admits it with its own filters as its policy.
    async fn admit_service(
        &self,
        request: &AuthRequest,
        password: bytes::Bytes,
        login: Option<ServiceLogin<'_>>,
        principal_of: fn(&str) -> String,
    ) -> Result<Identity, Outcome> {
        let hash = login.as_ref().map(|l| l.password_hash.to_owned());
        let queue = login
            .as_ref()
            .map_or(UNKNOWN_USERS, |l| l.tenant.as_str())
            .to_owned();
        if !self.check(request, &queue, password, hash).await? {
            let refusal = match login {
                Some(_) => Refusal::WrongPassword,
                None => Refusal::UnknownUser,
            };
            return Err(refusal.into());
        }
        let login = login.ok_or(Refusal::UnknownUser)?;
        let principal = principal_of(login.name);
        self.set_service_rules(
            &login.tenant,
            &principal,
            login.name,
            login.publish,
            login.subscribe,
        );
        Ok(Identity {
            tenant: login.tenant,
            principal,
            limits: None,
        })
    }

    /// Gives service credential `name`'s principal its own filters as its
    /// policy, at connect and at readmission alike.
    fn set_service_rules(
        &self,
        tenant: &TenantId,
        principal: &str,
        name: &str,
        publish: &[String],
        subscribe: &[String],
    ) {
        let template = PolicyTemplate::service_credential(name, publish, subscribe);
        self.cache.set_principal(
            tenant.as_str(),
            principal,
            PrincipalRules::Service(Arc::new(template)),
        );
    }

    /// Readmits the service credential behind `principal` (`service:{name}`
    /// in a tenant, `platform:{name}` in the platform namespace) if it
    /// still exists in that scope. Returns whether it does.
    async fn readmit_service(
        &self,
        tenant: &TenantId,
        principal: &str,
    ) -> Result<bool, AccessError> {
        let (scope, name) = if let Some(name) = principal.strip_prefix(PLATFORM_PREFIX) {
            if !tenant.is_platform() {
                return Ok(false);
            }
            (CredentialScope::Platform, name)
        } else if let Some(name) = principal.strip_prefix("service:") {
            if tenant.is_platform() {
                return Ok(false);
            }
            (CredentialScope::Tenant(tenant.as_str().to_owned()), name)
        } else {
            return Ok(false);
        };
        // No lookup by name exists; a scope holds a handful of backends,
        // and readmission happens once per restored will owner.
        let credentials = self.cache.store().list_service_credentials(&scope).await?;
        let Some(c) = credentials.iter().find(|c| c.name == name) else {
            return Ok(false);
        };
        // The principal is derived from the name, as at connect, so that a
        // credential recreated under another name is not readmitted.
        let expected = match scope {
            CredentialScope::Platform => platform_principal(&c.name),
            CredentialScope::Tenant(_) => service_principal(&c.name),
        };
        if expected != principal {
            return Ok(false);
        }
        self.set_service_rules(tenant, principal, &c.name, &c.publish, &c.subscribe);
        Ok(true)
    }
}

/// A tenant's or the platform's service credential, as the authenticator
/// needs it.
struct ServiceLogin<'a> {
    /// Its namespace: the tenant, or the platform's.
    tenant: TenantId,
    name: &'a str,
    password_hash: &'a str,
    publish: &'a [String],
    subscribe: &'a [String],
}

#[async_trait]
impl Authenticator for PlatformAuthenticator {
    /// A device that still exists and is enabled gets its tenant's
    /// policies again, as at connect; a service credential that still
    /// exists in its scope gets its own filters again, so a will a backend
    /// left on a node that died is authorized as on its live connection.
    async fn readmit(&self, tenant: &TenantId, principal: &str) -> bool {
        let t = tenant.as_str();
        let admitted = async {
            // Service and platform principals have a `:`; device ids cannot.
            if principal.contains(':') {
                return self.readmit_service(tenant, principal).await;
            }
            let Some(entry) = self.cache.device(t, principal).await? else {
                return Ok(false);
            };
            if !entry.enabled {
                return Ok(false);
            }
            self.cache.ensure_policies(t).await?;
            self.cache
                .set_principal(t, principal, PrincipalRules::Device);
            Ok::<_, AccessError>(true)
        };
        match admitted.await {
            Ok(known) => known,
            Err(e) => {
                tracing::warn!(tenant = t, principal, error = %e, "a restored session's owner could not be readmitted");
                false
            }
        }
    }

    async fn authenticate(&self, request: &AuthRequest) -> Result<Identity, AuthError> {
        let mut subject = Subject::default();
        let mut cert_identity = None;
        let result = match (
            &request.peer_certificates,
            &request.username,
            &request.password,
        ) {
            (Some(chain), _, _) if !chain.is_empty() => {
                self.by_certificate(request, chain, &mut cert_identity)
                    .await
            }
            (_, Some(username), Some(password)) => {
                self.by_password(request, username, password.clone(), &mut subject)
                    .await
            }
            _ => Err(Refusal::NoCredentials.into()),
        };
        let tenant = cert_identity
            .as_ref()
            .map(|i| i.tenant.as_str())
            .or(subject.tenant)
            .unwrap_or_default();
        let device = cert_identity
            .as_ref()
            .map(|i| i.device.as_str())
            .or(subject.device)
            .unwrap_or_default();
        let client_id = request.client_id.as_str();
        let method = if cert_identity.is_some() || request.peer_certificates.is_some() {
            "certificate"
        } else {
            "password"
        };
        match result {
            Ok(identity) => {
                // At debug: the broker's "connected" line says the same
                // (with the method) once the session is set up.
                tracing::debug!(tenant = %identity.tenant.as_str(), principal = %identity.principal, client_id, method, peer = %request.peer, "client authenticated");
                Ok(identity)
            }
            Err(Outcome::Refused(refusal)) => {
                tracing::info!(tenant, device, client_id, method, peer = %request.peer, reason = %refusal, "connection refused");
                Err(AuthError::from(&refusal))
            }
            Err(Outcome::Failed(e)) => {
                tracing::warn!(tenant, device, client_id, method, peer = %request.peer, error = %e, "could not authenticate");
                Err(AuthError::from(&e))
            }
        }
    }
}
