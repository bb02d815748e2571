//! Just-in-time registration: a certificate from a tenant's registered
//! (bring-your-own) CA with `jit_registration` on, naming a device that
//! does not exist yet, creates it on first connect. The certificate chain
//! has been verified and its SAN tenant matched to the CA's tenant before
//! this runs, so the device id is one the tenant's own PKI vouched for.

use std::sync::Arc;

use serde_json::json;

use crate::{AccessCache, AccessError, Refusal};

/// Who created devices just in time: the audit log's actor.
pub const JIT_ACTOR: &str = "mqtt:jit-registration";

/// Called with each device created just in time.
#[derive(Clone)]
pub struct DeviceCreated(pub Arc<dyn Fn(&store::Device) + Send + Sync>);

impl std::fmt::Debug for DeviceCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceCreated")
    }
}

/// Creates `id`'s device if its CA allows it; the refusal otherwise.
pub(crate) async fn register(
    cache: &AccessCache,
    hook: Option<&DeviceCreated>,
    id: &pki::DeviceIdentity,
) -> Result<(), Outcome> {
    let (tenant, device) = (id.tenant.as_str(), id.device.as_str());
    if id.issuer_kind != pki::CaKind::Registered {
        return Err(Refusal::UnknownDevice.into());
    }
    let ca = match cache.store().get_tenant_ca(tenant, &id.issuer_ca).await {
        Ok(ca) => ca,
        // Removed between the handshake and now: as good as untrusted.
        Err(store::Error::NotFound { .. }) => return Err(Refusal::UnknownDevice.into()),
        Err(e) => return Err(AccessError::from(e).into()),
    };
    if !ca.jit_registration {
        return Err(Refusal::UnknownDeviceNoJit {
            ca: id.issuer_ca.clone(),
        }
        .into());
    }
    let new = store::NewDevice {
        id: device.to_owned(),
        labels: Default::default(),
        attributes: Default::default(),
        enabled: true,
    };
    // Its `device.created` goes out through the hook, on the broker's fast
    // path like other MQTT-originated events, not with this entry.
    let audit = store::NewAuditEntry {
        tenant_id: Some(tenant.to_owned()),
        actor: JIT_ACTOR.to_owned(),
        action: "device.create".to_owned(),
        target: format!("tenants/{tenant}/devices/{device}"),
        request_id: None,
        details: json!({
            "just_in_time": true,
            "ca": id.issuer_ca,
            "serial": id.serial,
        }),
        events: Vec::new(),
    };
    match cache
        .store()
        .create_device_audited(tenant, &new, &|_| audit.clone())
        .await
    {
        Ok(created) => {
            tracing::info!(tenant, device, ca = %id.issuer_ca, serial = %id.serial, "device registered just in time");
            if let Some(hook) = hook {
                (hook.0)(&created);
            }
            Ok(())
        }
        // Two first connects at once: the other one created it.
        Err(store::Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(AccessError::from(e).into()),
    }
}

pub(crate) use crate::authenticator::Outcome;
