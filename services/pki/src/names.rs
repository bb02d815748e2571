//! Ids as they appear in certificates. Tenant and device ids go into
//! subject names and the SPIFFE URI, so only the characters the platform
//! allows everywhere are accepted (the `ids` crate's rules).

use crate::Error;

/// The trust domain used when the configuration names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "fleetmq.local";

/// Check a tenant id: `[a-z0-9-]{3,63}` (the `ids` crate's rule).
pub fn validate_tenant_id(id: &str) -> Result<(), Error> {
    match ids::TenantId::parse(id) {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::InvalidTenantId { id: id.to_owned() }),
    }
}

/// Check a device id: `[A-Za-z0-9._-]{1,128}` (the `ids` crate's rule).
pub fn validate_device_id(id: &str) -> Result<(), Error> {
    match ids::DeviceId::parse(id) {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::InvalidDeviceId { id: id.to_owned() }),
    }
}

/// Check a SPIFFE trust domain: 1-255 of `[a-z0-9._-]` (SPIFFE-ID §2.1).
pub fn validate_trust_domain(domain: &str) -> Result<(), Error> {
    let ok = (1..=255).contains(&domain.len())
        && domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidTrustDomain {
            domain: domain.to_owned(),
        })
    }
}

/// `spiffe://{trust_domain}/tenant/{tenant}/device/{device}`, after checking
/// all three parts.
pub fn spiffe_uri(trust_domain: &str, tenant: &str, device: &str) -> Result<String, Error> {
    validate_trust_domain(trust_domain)?;
    validate_tenant_id(tenant)?;
    validate_device_id(device)?;
    Ok(format!(
        "spiffe://{trust_domain}/tenant/{tenant}/device/{device}"
    ))
}

/// Split a device SPIFFE URI into `(trust_domain, tenant, device)`, or say
/// what is wrong with it. Every part must satisfy its id rules, so a URI
/// that parses can be substituted into topics safely.
pub fn parse_spiffe_uri(uri: &str) -> Result<(&str, &str, &str), &'static str> {
    let rest = uri.strip_prefix("spiffe://").ok_or("not a spiffe:// URI")?;
    let mut parts = rest.split('/');
    let (Some(domain), Some("tenant"), Some(tenant), Some("device"), Some(device), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err("expected spiffe://{domain}/tenant/{tenant}/device/{device}");
    };
    validate_trust_domain(domain).map_err(|_| "invalid trust domain")?;
    validate_tenant_id(tenant).map_err(|_| "invalid tenant id")?;
    validate_device_id(device).map_err(|_| "invalid device id")?;
    Ok((domain, tenant, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_platform_rules() {
        assert!(validate_tenant_id("acme-1").is_ok());
        for bad in ["ab", "Acme", "a/b-c", "acme corp", &"a".repeat(64)] {
            assert!(validate_tenant_id(bad).is_err(), "{bad}");
        }
        assert!(validate_device_id("Sensor_1.a-b").is_ok());
        for bad in ["", "a/b", "a+b", "a#", "a b", &"d".repeat(129)] {
            assert!(validate_device_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spiffe_uri_round_trips_and_refuses_extra_parts() {
        let uri = spiffe_uri("fleetmq.local", "acme", "dev-1").unwrap();
        assert_eq!(uri, "spiffe://fleetmq.local/tenant/acme/device/dev-1");
        assert_eq!(
            parse_spiffe_uri(&uri),
            Ok(("fleetmq.local", "acme", "dev-1"))
        );
        for bad in [
            "https://fleetmq.local/tenant/acme/device/d",
            "spiffe://fleetmq.local/tenant/acme/device/d/extra",
            "spiffe://fleetmq.local/tenant/acme/device/",
            "spiffe://fleetmq.local/tenant/ACME/device/d",
            "spiffe://fleetmq.local/org/acme/device/d",
            "spiffe://fleetmq.local/tenant/acme/device/a+b",
        ] {
            assert!(parse_spiffe_uri(bad).is_err(), "{bad}");
        }
        assert!(spiffe_uri("fleetmq.local", "acme", "a/b").is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panic(uri in "\\PC{0,80}") {
            let _ = parse_spiffe_uri(&uri);
        }

        #[test]
        fn valid_ids_round_trip(
            tenant in "[a-z0-9-]{3,63}",
            device in "[A-Za-z0-9._-]{1,128}",
        ) {
            let uri = spiffe_uri("fleetmq.local", &tenant, &device).unwrap();
            proptest::prop_assert_eq!(
                parse_spiffe_uri(&uri),
                Ok(("fleetmq.local", tenant.as_str(), device.as_str()))
            );
        }

        #[test]
        fn a_separator_in_an_id_never_parses(
            tenant in "[a-z0-9-]{3,20}",
            left in "[A-Za-z0-9]{1,10}",
            sep in "[/+#?]",
            right in "[A-Za-z0-9]{0,10}",
        ) {
            let uri = format!("spiffe://fleetmq.local/tenant/{tenant}/device/{left}{sep}{right}");
            proptest::prop_assert!(parse_spiffe_uri(&uri).is_err());
        }
    }
}
