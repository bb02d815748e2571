//! [`Revocations`]: what the REST API calls after changing a device's or
//! certificate's state, so that the change counts for live sessions too.

use broker::{Broker, TenantId};

use crate::AccessCache;

/// Invalidates the cache and ends the live sessions a change affects
/// (DISCONNECT 0x98 Administrative action in v5).
#[derive(Debug, Clone)]
pub struct Revocations {
    cache: AccessCache,
    broker: Broker,
}

impl Revocations {
    /// Acts on `cache` and `broker`.
    pub fn new(cache: AccessCache, broker: Broker) -> Revocations {
        Revocations { cache, broker }
    }

    fn kick(&self, tenant: &str, device: &str) -> bool {
        // Tenant and device ids come from our own store; a malformed one
        // cannot have a live session.
        let Ok(tenant_id) = TenantId::parse(tenant) else {
            return false;
        };
        let kicked = self.broker.disconnect_client(&tenant_id, device);
        if kicked {
            tracing::info!(
                tenant,
                device,
                client_id = device,
                "session ended by the platform"
            );
        }
        kicked
    }

    /// A certificate was revoked: refuse it from now on, and end the
    /// device's session if it logged in with this certificate. Returns
    /// whether a session was ended.
    pub fn certificate_revoked(&self, tenant: &str, device: &str, serial: &str) -> bool {
        self.cache.invalidate_certificate(tenant, serial);
        if self.cache.cert_session(tenant, device).as_deref() != Some(serial) {
            return false;
        }
        self.cache.forget_cert_session(tenant, device);
        self.kick(tenant, device)
    }

    /// A device was disabled or deleted, or its revocation floor or
    /// password changed: re-read it on the next connect and end its live
    /// session, whatever it logged in with.
    pub fn device_changed(&self, tenant: &str, device: &str) -> bool {
        self.cache.invalidate_device(tenant, device);
        self.cache.forget_cert_session(tenant, device);
        self.kick(tenant, device)
    }

    /// The tenant's service credential `name` was deleted: end every
    /// session it opened. Returns how many were ended.
    pub fn service_credential_deleted(&self, tenant: &str, name: &str) -> usize {
        let Ok(tenant_id) = TenantId::parse(tenant) else {
            return 0;
        };
        let principal = crate::service_principal(name);
        let ended = self.broker.disconnect_principal(&tenant_id, &principal);
        if ended > 0 {
            tracing::info!(
                tenant,
                principal,
                sessions = ended,
                "service credential sessions ended by the platform"
            );
        }
        ended
    }

    /// The tenant was deleted: forget it here and in the broker, ending
    /// every session of it whatever it logged in with. Returns how many
    /// sessions were ended.
    pub fn tenant_deleted(&self, tenant: &str) -> usize {
        self.cache.invalidate_tenant(tenant);
        for device in self.cache.cert_session_devices(tenant) {
            self.cache.forget_cert_session(tenant, &device);
        }
        let Ok(tenant_id) = TenantId::parse(tenant) else {
            return 0;
        };
        let ended = self.broker.remove_tenant(&tenant_id);
        tracing::info!(
            tenant,
            sessions = ended,
            "tenant deleted; its sessions ended"
        );
        ended
    }

    /// A platform service credential was deleted: end every session it
    /// opened. Returns how many were ended.
    pub fn platform_credential_deleted(&self, name: &str) -> usize {
        let principal = crate::platform_principal(name);
        let ended = self
            .broker
            .disconnect_principal(&TenantId::platform(), &principal);
        if ended > 0 {
            tracing::info!(
                principal,
                sessions = ended,
                "platform sessions ended by the platform"
            );
        }
        ended
    }

    /// The tenant's ACL policies changed (and are reloaded): live
    /// subscriptions they no longer allow are removed (see
    /// `broker::Broker::recheck_subscriptions`). Returns how many.
    pub fn policies_changed(&self, tenant: &str) -> usize {
        let Ok(tenant_id) = TenantId::parse(tenant) else {
            return 0;
        };
        let removed = self.broker.recheck_subscriptions(&tenant_id);
        tracing::info!(
            tenant,
            removed,
            "ACL policies changed; live subscriptions re-checked"
        );
        removed
    }

    /// The tenant's topic hygiene rules were replaced: the broker applies
    /// them from the next packet of every session.
    pub fn topic_rules_changed(&self, tenant: &str, rules: &store::TopicRules) {
        let Ok(tenant_id) = TenantId::parse(tenant) else {
            return;
        };
        self.broker.set_topic_rules(&tenant_id, *rules);
        tracing::info!(tenant, "topic rules changed");
    }

    /// The tenant's revocation floor was set (or the tenant deleted): forget
    /// the tenant and end every session of it that logged in with a
    /// certificate. Returns how many sessions were ended.
    pub fn tenant_changed(&self, tenant: &str) -> usize {
        self.cache.invalidate_tenant(tenant);
        let devices = self.cache.cert_session_devices(tenant);
        devices
            .iter()
            .filter(|device| {
                self.cache.forget_cert_session(tenant, device);
                self.kick(tenant, device)
            })
            .count()
    }
}
