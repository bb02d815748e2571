//! Platform service credentials: `platform:{name}` authenticates into the
//! broker's platform namespace with its filters over the mounted topic
//! space; the store is the tenant directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use access::{AccessCache, PlatformAuthenticator, PolicyAuthorizer, StoreTenants};
use broker::{AuthError, AuthRequest, Authenticator, Authorizer, TenantDirectory, TenantId};
use bytes::Bytes;
use chrono::Utc;
use mqtt::{TopicFilter, TopicName};
use pki::{RootCa, TrustRegistry};
use store::testing::TestDb;
use store::{CredentialScope, NewServiceCredential, NewTenant};

fn request(username: &str, password: &str) -> AuthRequest {
    AuthRequest {
        username: Some(username.into()),
        password: Some(Bytes::copy_from_slice(password.as_bytes())),
        client_id: "backend-1".into(),
        peer: "127.0.0.1:1".parse().unwrap(),
        peer_certificates: None,
        protocol: mqtt::ProtocolVersion::V5,
    }
}

/// The platform's authenticator and authorizer over `store`, with a CA
/// no test client uses.
fn authenticator(
    store: &store::Store,
) -> anyhow::Result<(PlatformAuthenticator, PolicyAuthorizer)> {
    let root = RootCa::generate(Utc::now(), chrono::Duration::days(30))?;
    let trust = TrustRegistry::new(root.cert_der().clone(), pki::DEFAULT_TRUST_DOMAIN)?;
    let cache = AccessCache::new(store.clone());
    Ok((
        PlatformAuthenticator::new(trust, cache.clone()),
        PolicyAuthorizer::new(cache),
    ))
}

async fn platform_credentials_authenticate_into_the_platform_namespace(
    db: &TestDb,
) -> anyhow::Result<()> {
    let store = db.store();
    let (auth, authorizer) = authenticator(store)?;
    let secret = access::generate_password()?;
    store
        .create_service_credential(
            &NewServiceCredential {
                id: "p1".into(),
                scope: CredentialScope::Platform,
                name: "ops".into(),
                username: access::platform_principal("ops"),
                password_hash: access::hash_password(&secret)?,
                publish: vec!["+/commands/#".into()],
                subscribe: vec![],
            },
            None,
        )
        .await?;

    let identity = auth
        .authenticate(&request("platform:ops", &secret))
        .await
        .unwrap();
    assert_eq!(identity.tenant, TenantId::platform());
    assert_eq!(identity.principal, "platform:ops");
    let t = |s: &str| TopicName::parse(s).unwrap();
    let f = |s: &str| TopicFilter::parse(s).unwrap();
    assert!(authorizer.can_publish(&identity, &t("acme/commands/d1/x")));
    assert!(!authorizer.can_publish(&identity, &t("acme/devices/d1/x")));
    assert!(authorizer.can_subscribe(&identity, &f("+/devices/+/status")));
    assert!(authorizer.can_subscribe(&identity, &f("#")));

    assert_eq!(
        auth.authenticate(&request("platform:ops", "wrong")).await,
        Err(AuthError::BadCredentials)
    );
    assert_eq!(
        auth.authenticate(&request("platform:nobody", &secret))
            .await,
        Err(AuthError::BadCredentials)
    );
    // The same name as a tenant service user name is another user.
    assert_eq!(
        auth.authenticate(&request("ops", &secret)).await,
        Err(AuthError::BadCredentials)
    );

    let directory = StoreTenants::new(store.clone());
    for id in ["globex", "acme"] {
        store
            .create_tenant(&NewTenant {
                id: id.into(),
                name: id.into(),
            })
            .await?;
    }
    let acme = TenantId::parse("acme")?;
    assert!(directory.exists(&acme).await?);
    assert!(!directory.exists(&TenantId::parse("initech")?).await?);
    assert_eq!(directory.list().await?, [acme, TenantId::parse("globex")?]);
    Ok(())
}

store::backend_tests!(platform_credentials_authenticate_into_the_platform_namespace);

/// A restored session's will owner that is a service credential is known
/// to the authorizer again after `readmit`, with its own filters, as long
/// as the credential exists in the scope its principal names.
async fn service_credentials_are_readmitted_with_their_filters(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    let (auth, authorizer) = authenticator(store)?;
    store
        .create_tenant(&NewTenant {
            id: "acme".into(),
            name: "acme".into(),
        })
        .await?;
    for (id, scope, name, username, publish) in [
        (
            "p1",
            CredentialScope::Platform,
            "ops",
            access::platform_principal("ops"),
            "+/commands/#",
        ),
        (
            "s1",
            CredentialScope::Tenant("acme".into()),
            "backend",
            "service:acme:backend".to_owned(),
            "backends/#",
        ),
    ] {
        store
            .create_service_credential(
                &NewServiceCredential {
                    id: id.into(),
                    scope,
                    name: name.into(),
                    username,
                    password_hash: access::hash_password("unused-secret")?,
                    publish: vec![publish.into()],
                    subscribe: vec![],
                },
                None,
            )
            .await?;
    }
    let acme = TenantId::parse("acme")?;
    let platform = TenantId::platform();
    let identity = |tenant: &TenantId, principal: &str| broker::Identity {
        tenant: tenant.clone(),
        principal: principal.into(),
        limits: None,
    };
    let t = |s: &str| TopicName::parse(s).unwrap();

    // Unknown to the authorizer before: nothing connected on this node.
    let backend = identity(&acme, &access::service_principal("backend"));
    assert!(!authorizer.can_publish(&backend, &t("backends/b1/gone")));
    assert!(auth.readmit(&acme, &backend.principal).await);
    assert!(authorizer.can_publish(&backend, &t("backends/b1/gone")));
    assert!(!authorizer.can_publish(&backend, &t("devices/d1/x")));

    let ops = identity(&platform, &access::platform_principal("ops"));
    assert!(!authorizer.can_publish(&ops, &t("acme/commands/d1/x")));
    assert!(auth.readmit(&platform, &ops.principal).await);
    assert!(authorizer.can_publish(&ops, &t("acme/commands/d1/x")));
    assert!(!authorizer.can_publish(&ops, &t("acme/devices/d1/x")));

    // A principal outside its credential's scope, or of no credential.
    assert!(
        !auth
            .readmit(&platform, &access::service_principal("backend"))
            .await
    );
    assert!(
        !auth
            .readmit(&acme, &access::platform_principal("ops"))
            .await
    );
    assert!(
        !auth
            .readmit(&acme, &access::service_principal("nobody"))
            .await
    );
    let other = TenantId::parse("globex")?;
    assert!(
        !auth
            .readmit(&other, &access::service_principal("backend"))
            .await
    );
    Ok(())
}

store::backend_tests!(service_credentials_are_readmitted_with_their_filters);
