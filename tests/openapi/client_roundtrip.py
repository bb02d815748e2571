"""A client generated from openapi/openapi.json round-trips a device.

Usage: client_roundtrip.py OPENAPI_JSON BASE_URL TOKEN WORK_DIR

Generates a Python package with openapi-python-client into WORK_DIR, imports
it, and through it only: creates a tenant and a device, reads the device
back, lists it (with a label filter and paging), patches it and deletes it.
Exits non-zero, saying why, on the first surprise.
"""

import subprocess
import sys
import uuid
from pathlib import Path


def main() -> None:
    schema, base_url, token, work = sys.argv[1:5]
    out = Path(work) / "fleetmq_client"
    subprocess.run(
        [
            "openapi-python-client", "generate", "--path", schema,
            "--meta", "none", "--output-path", str(out), "--overwrite",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    sys.path.insert(0, str(out.parent))

    from fleetmq_client import AuthenticatedClient
    from fleetmq_client.api.devices import (
        create_device, delete_device, get_device, list_devices, update_device,
    )
    from fleetmq_client.api.tenants import create_tenant
    from fleetmq_client.models import (
        CreateDevice, CreateTenant, Device, DevicePage, PatchDevice, Tenant,
    )

    client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)
    tenant_id = "gen-" + uuid.uuid4().hex[:8]

    def expect(response, status, model):
        if response.status_code != status or not isinstance(response.parsed, model):
            sys.exit(
                f"generated client: expected {status} {model.__name__}, got "
                f"{int(response.status_code)}: {response.content!r}"
            )
        return response.parsed

    tenant = expect(
        create_tenant.sync_detailed(client=client, body=CreateTenant(id=tenant_id, name="Generated")),
        201, Tenant,
    )
    assert tenant.id == tenant_id, tenant

    body = CreateDevice.from_dict({
        "id": "gen-1",
        "labels": {"site": "berlin"},
        "attributes": {"model": "x1", "rev": 3},
    })
    key = uuid.uuid4().hex
    created = expect(
        create_device.sync_detailed(tenant_id, client=client, body=body, idempotency_key=key),
        201, Device,
    )
    # A retry with the same key gets the first result, not a 409.
    replayed = expect(
        create_device.sync_detailed(tenant_id, client=client, body=body, idempotency_key=key),
        201, Device,
    )
    assert replayed.to_dict() == created.to_dict(), (replayed, created)
    for other in ("gen-2", "gen-3"):
        expect(
            create_device.sync_detailed(tenant_id, client=client, body=CreateDevice(id=other)),
            201, Device,
        )

    got = expect(get_device.sync_detailed(tenant_id, "gen-1", client=client), 200, Device)
    assert got.to_dict() == created.to_dict(), (got, created)
    assert got.labels.to_dict() == {"site": "berlin"}, got.labels
    assert got.attributes.to_dict() == {"model": "x1", "rev": 3}, got.attributes

    page = expect(
        list_devices.sync_detailed(tenant_id, client=client, label=["site=berlin"]),
        200, DevicePage,
    )
    assert [d.id for d in page.items] == ["gen-1"], page
    seen, cursor = [], None
    while True:
        kwargs = {"limit": 2}
        if cursor:
            kwargs["cursor"] = cursor
        page = expect(list_devices.sync_detailed(tenant_id, client=client, **kwargs), 200, DevicePage)
        seen += [d.id for d in page.items]
        cursor = page.next_cursor
        if not cursor:
            break
    assert seen == ["gen-1", "gen-2", "gen-3"], seen

    patched = expect(
        update_device.sync_detailed(
            tenant_id, "gen-1", client=client, body=PatchDevice.from_dict({"enabled": False}),
        ),
        200, Device,
    )
    assert patched.enabled is False, patched
    response = delete_device.sync_detailed(tenant_id, "gen-1", client=client)
    assert response.status_code == 204, response
    print(f"generated client: create/get/list/patch/delete round trip OK (tenant {tenant_id})")


if __name__ == "__main__":
    main()
