-- Presence published over MQTT, and just-in-time registration for
-- tenants' own CAs (issues 5 and 6).

-- Per tenant: whether the broker publishes a retained `devices/{d}/status`
-- message on connect and disconnect. No row means on (the default), so
-- existing tenants get it without a backfill.
CREATE TABLE tenant_presence_settings (
    tenant_id      TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    publish_status BOOLEAN NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

-- A registered (bring-your-own) CA whose certificates create their device
-- on first connect. Only meaningful for kind = 'registered'.
ALTER TABLE tenant_cas ADD COLUMN jit_registration BOOLEAN NOT NULL DEFAULT FALSE;
