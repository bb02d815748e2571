-- Fairness between tenants (issue 13): the webhook fan-out takes each
-- round's events round-robin per tenant, and the outbox writer bounds
-- undispatched events per tenant; both read undispatched events by tenant.
CREATE INDEX webhook_outbox_undispatched_by_tenant
    ON webhook_outbox (tenant_id, id) WHERE dispatched_at IS NULL;

-- A claim checks, for each due delivery, that no earlier one of the same
-- endpoint and ordering key is open: one probe here instead of a scan of
-- the endpoint's whole backlog (quadratic in it), so one tenant's backlog
-- does not slow every claim round down for the others.
CREATE INDEX webhook_deliveries_open_by_key
    ON webhook_deliveries (endpoint_id, ordering_key, id)
    WHERE status IN ('pending', 'delivering');
