//! Fairness between tenants on the REST path: at most
//! [`HttpLimits::tenant_concurrency`](crate::HttpLimits) requests of one
//! tenant (`/v1/tenants/{t}/…`) are in handlers at once; more wait their
//! turn (FIFO, within the request timeout, then 503) without holding a
//! database connection or a slot of the global concurrency limit. One
//! tenant's flood therefore holds at most that many of the database pool's
//! connections, and the rest of the pool serves the other tenants.
//!
//! The per-tenant semaphores live only while a request of that tenant is
//! in flight, so paths naming made-up tenants cannot grow the map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// The tenant a `/v1/tenants/{t}/…` path is about, `""` otherwise.
pub(crate) fn tenant_scope(path: &str) -> &str {
    path.strip_prefix("/v1/tenants/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("")
}

/// One semaphore per tenant with requests in flight.
#[derive(Debug)]
pub(crate) struct TenantPermits {
    per_tenant: usize,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl TenantPermits {
    pub(crate) fn new(per_tenant: usize) -> Self {
        Self {
            per_tenant: per_tenant.clamp(1, Semaphore::MAX_PERMITS),
            tenants: Mutex::default(),
        }
    }

    fn enter(self: &Arc<Self>, tenant: &str) -> Entry {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let semaphore = tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone();
        Entry {
            permits: self.clone(),
            tenant: tenant.to_owned(),
            semaphore: Some(semaphore),
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A request's hold on its tenant's semaphore; leaving (also when the
/// request is dropped by the timeout or a closed connection) forgets the
/// tenant once nobody else of it is in flight.
struct Entry {
    permits: Arc<TenantPermits>,
    tenant: String,
    semaphore: Option<Arc<Semaphore>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut tenants = self
            .permits
            .tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Clones are made and dropped only under the lock, so two counts
        // (the map's and ours) mean nobody else is in flight.
        if let Some(semaphore) = self.semaphore.take()
            && Arc::strong_count(&semaphore) == 2
        {
            tenants.remove(&self.tenant);
        }
    }
}

/// See the module docs.
pub(crate) async fn limit_tenant_concurrency(
    State(permits): State<Arc<TenantPermits>>,
    req: Request,
    next: Next,
) -> Response {
    let tenant = tenant_scope(req.uri().path());
    if tenant.is_empty() {
        return next.run(req).await;
    }
    let entry = permits.enter(tenant);
    let Some(semaphore) = entry.semaphore.as_deref() else {
        return next.run(req).await;
    };
    let permit = match semaphore.try_acquire() {
        Ok(permit) => permit,
        Err(_) => {
            // No tenant label: the path is the caller's, not yet
            // authenticated, and would make the series unbounded.
            metrics::counter!("http_tenant_concurrency_waits_total").increment(1);
            match semaphore.acquire().await {
                Ok(permit) => permit,
                // Only if the semaphore was closed, which nothing does.
                Err(_) => return ApiError::unavailable("server is shutting down").into_response(),
            }
        }
    };
    let response = next.run(req).await;
    drop(permit);
    drop(entry);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_is_the_tenant_segment() {
        assert_eq!(tenant_scope("/v1/tenants"), "");
        assert_eq!(tenant_scope("/v1/tenants/acme/devices"), "acme");
        assert_eq!(tenant_scope("/v1/tenants/acme"), "acme");
        assert_eq!(tenant_scope("/metrics"), "");
    }

    #[tokio::test]
    async fn a_tenant_is_forgotten_when_its_last_request_leaves() {
        let permits = Arc::new(TenantPermits::new(2));
        let a = permits.enter("acme");
        let b = permits.enter("acme");
        let c = permits.enter("beta");
        assert_eq!(permits.tracked(), 2);
        let held = a.semaphore.as_deref().unwrap().try_acquire().unwrap();
        let held2 = b.semaphore.as_deref().unwrap().try_acquire().unwrap();
        // acme is at its cap; beta is not affected.
        assert!(a.semaphore.as_deref().unwrap().try_acquire().is_err());
        assert!(c.semaphore.as_deref().unwrap().try_acquire().is_ok());
        drop(held);
        drop(a);
        assert_eq!(permits.tracked(), 2);
        drop(held2);
        drop(b);
        drop(c);
        assert_eq!(permits.tracked(), 0);
    }
}
