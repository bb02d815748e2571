//! `fleetmq admin …`: operator commands that share `serve`'s config and data.

use std::time::Duration;

use crate::cli::TokenArgs;
use crate::config;
use crate::error::Error;
use crate::telemetry;

/// Prints a bearer token signed with the server's current key. It does not
/// take the data dir lock: a running server is the usual case, and the key
/// table in the database is shared safely (the server picks up a key it has
/// not seen on first use).
pub fn token(args: TokenArgs) -> Result<(), Error> {
    let storage = config::resolve_storage(&args.storage)?;
    let role: api::Role = args.role.parse().map_err(|_| {
        Error::Usage(format!(
            "invalid --role {:?}: expected platform-admin, tenant-admin, operator or viewer",
            args.role
        ))
    })?;
    let tenant = args
        .tenant
        .as_deref()
        .map(|t| {
            store::TenantId::parse(t).map_err(|_| {
                Error::Usage(format!(
                    "invalid --tenant {t:?}: a tenant id is 3 to 63 characters of a-z, 0-9 and -"
                ))
            })
        })
        .transpose()?;
    match (role, &tenant) {
        (api::Role::PlatformAdmin, Some(_)) => {
            return Err(Error::Usage(
                "a platform-admin token is for no tenant; drop --tenant".into(),
            ));
        }
        (api::Role::PlatformAdmin, None) | (_, Some(_)) => {}
        (_, None) => {
            return Err(Error::Usage("this role needs --tenant TENANT".into()));
        }
    }
    let ttl = parse_ttl(&args.ttl)
        .filter(|ttl| *ttl >= Duration::from_secs(1) && *ttl <= api::auth::MAX_TTL)
        .ok_or_else(|| {
            Error::Usage(format!(
                "invalid --ttl {:?}: expected e.g. 900, 15m, 1h or 7d, at most 30d",
                args.ttl
            ))
        })?;
    telemetry::init(storage.log_format)?;

    super::runtime()?.block_on(async {
        let url = storage.effective_database_url();
        let (store, _) = super::open_and_migrate(&url).await?;
        let result = async {
            let record = match &tenant {
                Some(tenant) => match store.get_tenant(tenant.as_str()).await {
                    Ok(record) => Some(record),
                    Err(store::Error::NotFound { .. }) => {
                        return Err(Error::NoSuchTenant(tenant.as_str().to_owned()));
                    }
                    Err(e) => return Err(Error::store(&url, e)),
                },
                None => None,
            };
            // Signing keys are sealed with the server's key-encryption
            // key, kept in its data directory. Before any server has made
            // one there, a bare key is created (never a second KEK: keys
            // sealed under it would not open on the server), and the
            // server seals it on start.
            let kek_path = storage.kek_path();
            let keys = if kek_path.is_file() {
                let kek = pki::Kek::load_file(&kek_path)
                    .map_err(|e| Error::Pki(format!("{}: {e}", kek_path.display())))?;
                api::Keys::load_or_create_sealed(&store, std::sync::Arc::new(kek)).await
            } else {
                api::Keys::load_or_create(&store).await
            }
            .map_err(|e| Error::Token(e.to_string()))?;
            // A tenant token dies with this incarnation of its tenant.
            match &record {
                Some(record) => keys.issue_in("cli", role, record, ttl),
                None => keys.issue(role, None, ttl),
            }
            .map_err(|e| Error::Token(e.to_string()))
        }
        .await;
        store.close().await;
        // The token alone on stdout, for `TOKEN=$(fleetmq admin token …)`.
        println!("{}", result?);
        Ok(())
    })
}

/// `900`, `900s`, `15m`, `1h`, `7d`.
fn parse_ttl(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at_checked(at)?,
        None => (text, "s"),
    };
    let n: u64 = number.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("900"), Some(Duration::from_secs(900)));
        assert_eq!(parse_ttl("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_ttl("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Some(Duration::from_secs(7 * 86_400)));
        for bad in ["", "h", "1x", "1.5h", "-1", "99999999999999999999d"] {
            assert_eq!(parse_ttl(bad), None, "{bad}");
        }
    }
}
