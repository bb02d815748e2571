//! Issue 5's tables: platform and tenant CAs, device certificates and
//! revocation floors, passwords, service credentials, ACL policies.

use chrono::{Duration, SubsecRound, Utc};
use serde_json::json;
use store::testing::TestDb;
use store::{
    CertificateStatus, CredentialScope, Error, NewDevice, NewDeviceCertificate,
    NewServiceCredential, NewTenantCa, Store, TenantCaKind, TenantCaStatus,
};

use crate::{acme, tenant};

async fn device(store: &Store, tenant_id: &str, id: &str) -> anyhow::Result<()> {
    let new = NewDevice {
        id: id.into(),
        labels: Default::default(),
        attributes: Default::default(),
        enabled: true,
    };
    store.create_device(tenant_id, &new).await?;
    Ok(())
}

fn issued_ca(tenant_id: &str, ski: &str) -> NewTenantCa {
    NewTenantCa {
        subject_key_id: ski.into(),
        tenant_id: tenant_id.into(),
        kind: TenantCaKind::Issued,
        cert_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
        sealed_key: Some(vec![1, 9, 9]),
        subject: format!("CN=fleetmq tenant {tenant_id} CA, O={tenant_id}"),
        fingerprint: "ab".repeat(32),
        not_after: Utc::now().trunc_subsecs(0) + Duration::days(3650),
    }
}

async fn platform_ca_is_stored_once(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    assert_eq!(store.platform_ca().await?, None);
    let ca = store.create_platform_ca("PEM", &[7, 7]).await?;
    assert_eq!(
        (ca.cert_pem.as_str(), ca.sealed_key.as_slice()),
        ("PEM", &[7, 7][..])
    );
    assert!(!format!("{ca:?}").contains("sealed_key"));
    assert!(matches!(
        store.create_platform_ca("OTHER", &[1]).await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(store.platform_ca().await?, Some(ca));
    Ok(())
}

async fn tenant_cas_are_kept_per_tenant(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    tenant(store, "beta").await?;
    let new = issued_ca("acme", "aa01");
    let ca = store.create_tenant_ca(&new).await?;
    assert_eq!(ca.kind, TenantCaKind::Issued);
    assert_eq!(ca.status, TenantCaStatus::Active);
    assert_eq!((ca.crl_number, ca.not_after), (0, new.not_after));
    assert_eq!(ca.sealed_key.as_deref(), Some(&[1, 9, 9][..]));
    assert!(!format!("{ca:?} {new:?}").contains("sealed_key"));
    // One CA, one tenant.
    assert!(matches!(
        store.create_tenant_ca(&issued_ca("beta", "aa01")).await,
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.create_tenant_ca(&issued_ca("nobody", "aa02")).await,
        Err(Error::NotFound { kind: "tenant", .. })
    ));
    // The platform keeps keys of the CAs it issued, and only those.
    let registered = NewTenantCa {
        kind: TenantCaKind::Registered,
        sealed_key: None,
        ..issued_ca("beta", "bb01")
    };
    store.create_tenant_ca(&registered).await?;
    let keyless_issued = NewTenantCa {
        sealed_key: None,
        ..issued_ca("beta", "bb02")
    };
    assert!(store.create_tenant_ca(&keyless_issued).await.is_err());
    let keyed_registered = NewTenantCa {
        kind: TenantCaKind::Registered,
        ..issued_ca("beta", "bb03")
    };
    assert!(store.create_tenant_ca(&keyed_registered).await.is_err());

    assert_eq!(store.list_tenant_cas(None).await?.len(), 2);
    let beta = store.list_tenant_cas(Some("beta")).await?;
    assert_eq!(beta.len(), 1);
    assert_eq!(
        (beta[0].kind, beta[0].sealed_key.as_ref()),
        (TenantCaKind::Registered, None)
    );

    assert_eq!(store.next_crl_number("acme", "aa01").await?, 1);
    assert_eq!(store.next_crl_number("acme", "aa01").await?, 2);
    assert!(matches!(
        store.next_crl_number("beta", "aa01").await,
        Err(Error::NotFound { .. })
    ));

    let disabled = store
        .set_tenant_ca_status("acme", "aa01", TenantCaStatus::Disabled)
        .await?;
    assert_eq!(
        (disabled.status, disabled.crl_number),
        (TenantCaStatus::Disabled, 2)
    );
    assert_eq!(store.get_tenant_ca("acme", "aa01").await?, disabled);
    assert!(matches!(
        store.get_tenant_ca("beta", "aa01").await,
        Err(Error::NotFound { .. })
    ));
    store.delete_tenant_ca("beta", "bb01", None).await?;
    assert!(matches!(
        store.delete_tenant_ca("beta", "bb01", None).await,
        Err(Error::NotFound { .. })
    ));
    store.delete_tenant("acme").await?;
    assert!(store.list_tenant_cas(None).await?.is_empty());
    Ok(())
}

async fn device_certificates_are_recorded_and_revoked(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    device(store, "acme", "d1").await?;
    let not_before = Utc::now().trunc_subsecs(0);
    let new = |serial: &str, device_id: &str| NewDeviceCertificate {
        tenant_id: "acme".into(),
        device_id: device_id.into(),
        serial: serial.into(),
        fingerprint: format!("fp-{serial}"),
        issuer_key_id: "aa01".into(),
        not_before,
        not_after: not_before + Duration::days(365),
    };
    let first = store
        .create_device_certificate(&new("0a1b", "d1"), None)
        .await?;
    assert_eq!(first.status, CertificateStatus::Active);
    assert_eq!((first.not_before, first.revoked_at), (not_before, None));
    // Rotation: several certificates per device; a serial once per tenant.
    store
        .create_device_certificate(&new("0c2d", "d1"), None)
        .await?;
    assert!(matches!(
        store
            .create_device_certificate(&new("0a1b", "d1"), None)
            .await,
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        store
            .create_device_certificate(&new("0e3f", "ghost"), None)
            .await,
        Err(Error::NotFound { kind: "device", .. })
    ));
    let listed = store.list_device_certificates("acme", "d1").await?;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], first);

    let at = Utc::now().trunc_subsecs(6);
    let revoked = store
        .revoke_device_certificate("acme", "d1", "0a1b", "key_compromise", at, None)
        .await?;
    assert_eq!(revoked.status, CertificateStatus::Revoked);
    assert_eq!(revoked.revoked_at, Some(at));
    // Twice: the first time and reason stay.
    let again = store
        .revoke_device_certificate(
            "acme",
            "d1",
            "0a1b",
            "superseded",
            at + Duration::hours(1),
            None,
        )
        .await?;
    assert_eq!(again, revoked);
    assert_eq!(again.revocation_reason.as_deref(), Some("key_compromise"));
    assert!(matches!(
        store
            .revoke_device_certificate("acme", "d2", "0c2d", "unspecified", at, None)
            .await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(store.get_device_certificate("acme", "0a1b").await?, revoked);
    assert!(matches!(
        store.get_device_certificate("beta", "0a1b").await,
        Err(Error::NotFound { .. })
    ));

    let crl = store.list_revoked_certificates("acme", Utc::now()).await?;
    assert_eq!(
        crl.iter().map(|c| c.serial.as_str()).collect::<Vec<_>>(),
        ["0a1b"]
    );
    // Expired certificates drop off the CRL.
    let later = not_before + Duration::days(400);
    assert!(
        store
            .list_revoked_certificates("acme", later)
            .await?
            .is_empty()
    );

    store.delete_device("acme", "d1").await?;
    assert!(
        store
            .list_device_certificates("acme", "d1")
            .await?
            .is_empty()
    );
    Ok(())
}

async fn revocation_floors_per_device_and_tenant(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    device(store, "acme", "d1").await?;
    device(store, "acme", "d2").await?;
    assert_eq!(store.cert_floors("acme", "d1").await?.effective(), None);
    let t1 = Utc::now().trunc_subsecs(6);
    let t2 = t1 + Duration::minutes(5);
    store.set_device_cert_floor("acme", "d1", t2, None).await?;
    store.set_tenant_cert_floor("acme", t1, None).await?;
    let d1 = store.cert_floors("acme", "d1").await?;
    assert_eq!(
        (d1.tenant, d1.device, d1.effective()),
        (Some(t1), Some(t2), Some(t2))
    );
    assert_eq!(store.cert_floors("acme", "d2").await?.effective(), Some(t1));
    // A floor is replaced, not merged.
    store.set_device_cert_floor("acme", "d1", t1, None).await?;
    assert_eq!(store.cert_floors("acme", "d1").await?.device, Some(t1));
    assert!(matches!(
        store.set_device_cert_floor("acme", "ghost", t1, None).await,
        Err(Error::NotFound { kind: "device", .. })
    ));
    assert!(matches!(
        store.set_tenant_cert_floor("nobody", t1, None).await,
        Err(Error::NotFound { kind: "tenant", .. })
    ));
    Ok(())
}

async fn ca_registration_codes_are_single_use(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let now = Utc::now();
    store
        .create_ca_registration_code("acme", "c0de", now + Duration::minutes(10), None)
        .await?;
    store
        .create_ca_registration_code("acme", "old", now - Duration::minutes(1), None)
        .await?;
    assert!(!store.take_ca_registration_code("beta", "c0de", now).await?);
    assert!(!store.take_ca_registration_code("acme", "old", now).await?);
    assert!(store.take_ca_registration_code("acme", "c0de", now).await?);
    assert!(!store.take_ca_registration_code("acme", "c0de", now).await?);
    assert!(matches!(
        store
            .create_ca_registration_code("nobody", "x", now, None)
            .await,
        Err(Error::NotFound { .. })
    ));
    Ok(())
}

async fn passwords_and_service_credentials(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    device(store, "acme", "d1").await?;
    assert_eq!(store.device_password_hash("acme", "d1").await?, None);
    store
        .set_device_password("acme", "d1", "$argon2id$v=19$one", None)
        .await?;
    store
        .set_device_password("acme", "d1", "$argon2id$v=19$two", None)
        .await?;
    assert_eq!(
        store.device_password_hash("acme", "d1").await?.as_deref(),
        Some("$argon2id$v=19$two")
    );
    assert!(matches!(
        store.set_device_password("acme", "ghost", "h", None).await,
        Err(Error::NotFound { .. })
    ));
    assert!(store.delete_device_password("acme", "d1", None).await?);
    assert!(!store.delete_device_password("acme", "d1", None).await?);

    let new = NewServiceCredential {
        id: "sc1".into(),
        scope: CredentialScope::Tenant("acme".into()),
        name: "ingest".into(),
        username: "svc-ingest@acme".into(),
        password_hash: "$argon2id$secret".into(),
        publish: vec!["commands/#".into()],
        subscribe: vec!["devices/+/state/#".into(), "devices/+/status".into()],
    };
    let created = store.create_service_credential(&new, None).await?;
    assert_eq!(
        (created.publish.clone(), created.subscribe.clone()),
        (new.publish.clone(), new.subscribe.clone())
    );
    assert!(!format!("{created:?} {new:?}").contains("argon2id"));
    // Another credential may take neither its name nor its username.
    for (id, name, username) in [
        ("sc2", "ingest", "other"),
        ("sc3", "other", "svc-ingest@acme"),
    ] {
        let taken = NewServiceCredential {
            id: id.into(),
            name: name.into(),
            username: username.into(),
            ..new.clone()
        };
        assert!(
            matches!(
                store.create_service_credential(&taken, None).await,
                Err(Error::AlreadyExists { .. })
            ),
            "{id}"
        );
    }
    assert_eq!(
        store
            .service_credential_by_username("svc-ingest@acme")
            .await?,
        Some(created.clone())
    );
    assert_eq!(
        store
            .list_service_credentials(&CredentialScope::Tenant("acme".into()))
            .await?,
        vec![created]
    );
    assert!(matches!(
        store
            .delete_service_credential(&CredentialScope::Tenant("beta".into()), "sc1", None)
            .await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        store
            .delete_service_credential(&CredentialScope::Tenant("acme".into()), "sc1", None)
            .await?
            .name,
        "ingest"
    );
    assert_eq!(
        store
            .service_credential_by_username("svc-ingest@acme")
            .await?,
        None
    );
    Ok(())
}

async fn acl_policies_put_get_list_delete(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let doc = |topic: &str| {
        json!({"rules": [{"effect": "allow", "action": "publish", "topic": topic}]})
            .as_object()
            .cloned()
            .unwrap()
    };
    let first = store
        .put_acl_policy("acme", "device", &doc("devices/${device}/#"), None)
        .await?;
    let second = store
        .put_acl_policy("acme", "device", &doc("devices/${device}/up"), None)
        .await?;
    assert_eq!(second.created_at, first.created_at);
    assert!(second.updated_at >= first.updated_at);
    assert_eq!(second.document, doc("devices/${device}/up"));
    store
        .put_acl_policy("acme", "backend", &doc("#"), None)
        .await?;
    let names = super::listed(store.list_acl_policies("acme"), |p| p.name).await?;
    assert_eq!(names, ["backend", "device"]);
    assert_eq!(store.get_acl_policy("acme", "device").await?, second);
    assert!(matches!(
        store
            .put_acl_policy("nobody", "device", &doc("#"), None)
            .await,
        Err(Error::NotFound { kind: "tenant", .. })
    ));
    store.delete_acl_policy("acme", "device", None).await?;
    assert!(matches!(
        store.get_acl_policy("acme", "device").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.delete_acl_policy("acme", "device", None).await,
        Err(Error::NotFound { .. })
    ));
    Ok(())
}

store::backend_tests!(
    platform_ca_is_stored_once,
    tenant_cas_are_kept_per_tenant,
    device_certificates_are_recorded_and_revoked,
    revocation_floors_per_device_and_tenant,
    ca_registration_codes_are_single_use,
    passwords_and_service_credentials,
    acl_policies_put_get_list_delete,
);
