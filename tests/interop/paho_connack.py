#!/usr/bin/env python3
"""Connects once with the Eclipse Paho Python client (paho-mqtt 2.x), a
client we did not write, and prints what the CONNACK said:

    paho_connack.py --port P --client-id ID --user U --password PW
                    [--protocol 311|5] [--persistent]

prints "connack RC SESSION_PRESENT" (RC as the number on the wire) and exits
0; fails if no CONNACK arrives. Driven by tests/e2e/hostile_sessions.rs.
"""

import argparse
import queue
import sys

import paho.mqtt.client as mqtt

WAIT = 15.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--protocol", choices=["311", "5"], default="311")
    ap.add_argument("--persistent", action="store_true")
    args = ap.parse_args()

    v5 = args.protocol == "5"
    kwargs = {}
    if not v5:
        kwargs["clean_session"] = not args.persistent
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=args.client_id,
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                         reconnect_on_failure=False, **kwargs)
    client.username_pw_set(args.user, args.password)
    acks = queue.Queue()
    client.on_connect = lambda c, u, flags, rc, p: acks.put((flags, rc))
    connect_kwargs = {"keepalive": 30}
    if v5:
        connect_kwargs["clean_start"] = not args.persistent
    client.connect(args.host, args.port, **connect_kwargs)
    client.loop_start()
    try:
        flags, rc = acks.get(timeout=WAIT)
    finally:
        client.loop_stop()
    value = rc.value if hasattr(rc, "value") else int(rc)
    # paho reports 3.1.1 return codes mapped onto MQTT 5 reason codes;
    # getId answers the 3.1.1 byte for a 3.1.1 connection.
    if not v5 and hasattr(rc, "getId"):
        value = {0: 0, 0x84: 1, 0x85: 2, 0x88: 3, 0x86: 4, 0x87: 5}.get(value, value)
    print(f"connack {value} {int(flags.session_present)}")
    sys.stdout.flush()
    client.disconnect()


if __name__ == "__main__":
    main()
