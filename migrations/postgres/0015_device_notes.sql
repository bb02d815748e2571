-- Operators' notes on a device (`GET|POST /v1/tenants/{t}/devices/{d}/notes`):
-- a short maintenance log ("battery replaced"), newest first, each with its
-- author. A device keeps its newest 100 notes: the trigger drops older ones
-- as a new one comes, so the log never grows without bound. The notes go
-- with their device.
CREATE TABLE device_notes (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  TEXT COLLATE "C" NOT NULL,
    device_id  TEXT COLLATE "C" NOT NULL,
    text       TEXT NOT NULL CHECK (char_length(text) BETWEEN 1 AND 2000),
    author     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX device_notes_by_device ON device_notes (tenant_id, device_id, id);

CREATE FUNCTION device_notes_keep_newest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM device_notes
    WHERE tenant_id = NEW.tenant_id AND device_id = NEW.device_id
      AND id NOT IN (SELECT id FROM device_notes
                     WHERE tenant_id = NEW.tenant_id AND device_id = NEW.device_id
                     ORDER BY id DESC LIMIT 100);
    RETURN NULL;
END
$$;

CREATE TRIGGER device_notes_keep_newest AFTER INSERT ON device_notes
    FOR EACH ROW EXECUTE FUNCTION device_notes_keep_newest();
