-- Retained quotas per principal (issue 13): who published each retained
-- message (the device id or service credential the broker counts it
-- against), so that after a restart a loaded message still counts towards
-- its publisher's quota, not only the tenant's. NULL: unknown (rows written
-- before this migration, or messages the platform published); those count
-- towards the tenant's quota only.
ALTER TABLE retained_messages ADD COLUMN owner TEXT COLLATE "C"
    CHECK (owner IS NULL OR octet_length(owner) BETWEEN 1 AND 65535);
