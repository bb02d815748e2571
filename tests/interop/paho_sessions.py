#!/usr/bin/env python3
"""Persistent sessions across restarts of fleetmq (issue 14), with the
Eclipse Paho Python client (paho-mqtt 2.x), a client we did not write.
Each step is one process, because the server restarts between steps:

    paho_sessions.py STEP --port P --client-id ID [--protocol 3|5]
        [--username U --password P] ...

  subscribe  connect with a persistent session (3.1.1: clean session 0;
             5: session expiry --expiry), subscribe --topic at QoS 1 and
             leave with a normal DISCONNECT (prints "present N" first)
  publish    publish --count QoS 1 messages m0..m{count-1} to --topic from
             a clean client, each PUBACK awaited: the broker acknowledged
             them all when this prints "ok publish"
  receive    resume the session (--present 0|1 is checked) and read until
             every m0..m{count-1} arrived (QoS 1 may repeat one, never lose
             one); prints "dup N" with how many came with DUP
  hold       resume the session and receive --count messages without
             acknowledging any, print "held N", then wait to be killed
  takeover   resume the session twice: the first connection is closed with
             0x8E Session taken over, the second has session present

Every step prints "ok STEP" on success, or fails with an assertion.
Driven by tests/e2e/sessions.rs.
"""

import argparse
import queue
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 60.0  # generous: the machine is shared, and 300 messages may load


class Peer:
    """One paho client on its network thread, never reconnecting."""

    def __init__(self, args, client_id, persistent=True, manual_ack=False):
        v5 = args.protocol == "5"
        self.v5 = v5
        kwargs = dict(client_id=client_id, reconnect_on_failure=False,
                      manual_ack=manual_ack,
                      protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        if not v5:
            kwargs["clean_session"] = not persistent
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.disconnects = queue.Queue()
        self.subacks = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = lambda c, u, f, rc, p: self.connacks.put((f, rc))
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        if args.username:
            self.client.username_pw_set(args.username, args.password)
        if v5:
            props = Properties(PacketTypes.CONNECT)
            if persistent:
                props.SessionExpiryInterval = args.expiry
            self.client.connect(args.host, args.port, keepalive=60,
                                clean_start=not persistent, properties=props)
        else:
            self.client.connect(args.host, args.port, keepalive=60)
        self.client.loop_start()
        flags, rc = self.connacks.get(timeout=WAIT)
        assert not rc.is_failure, f"CONNACK {rc}"
        self.present = int(flags.session_present)

    def subscribe(self, topic):
        self.client.subscribe(topic, qos=1)
        rcs = self.subacks.get(timeout=WAIT)
        assert all(not rc.is_failure for rc in rcs), f"SUBACK {rcs}"

    def leave(self):
        self.client.disconnect()
        self.disconnects.get(timeout=WAIT)
        self.client.loop_stop()


def expect_present(args, peer):
    print(f"present {peer.present}", flush=True)
    if args.present is not None:
        assert peer.present == args.present, \
            f"session present {peer.present}, expected {args.present}"


def subscribe(args):
    peer = Peer(args, args.client_id)
    expect_present(args, peer)
    peer.subscribe(args.topic)
    peer.leave()


def publish(args):
    peer = Peer(args, args.client_id, persistent=False)
    for i in range(args.count):
        info = peer.client.publish(args.topic, f"m{i}", qos=1)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published(), f"m{i} not acknowledged"
    peer.leave()


def receive(args):
    peer = Peer(args, args.client_id)
    expect_present(args, peer)
    want = {f"m{i}" for i in range(args.count)}
    got, dups, deadline = set(), 0, time.monotonic() + WAIT
    while got != want:
        left = deadline - time.monotonic()
        assert left > 0, f"missing {sorted(want - got)[:10]} of {len(want)}"
        try:
            m = peer.messages.get(timeout=left)
        except queue.Empty:
            continue
        got.add(m.payload.decode())
        dups += int(m.dup)
    assert got == want, f"unexpected {sorted(got - want)[:10]}"
    print(f"dup {dups}", flush=True)
    peer.leave()


def hold(args):
    peer = Peer(args, args.client_id, manual_ack=True)
    expect_present(args, peer)
    held = 0
    while held < args.count:
        peer.messages.get(timeout=WAIT)
        held += 1
    print(f"held {held}", flush=True)
    print("ok hold", flush=True)
    # Never acknowledged: the test kills the broker, then this process.
    time.sleep(3600)


def takeover(args):
    first = Peer(args, args.client_id)
    expect_present(args, first)
    second = Peer(args, args.client_id)
    assert second.present == 1, "the second connection resumes the session"
    rc = first.disconnects.get(timeout=WAIT)
    if first.v5:
        assert rc.value == 0x8E, f"first connection closed with {rc}"
    second.leave()
    first.client.loop_stop()


STEPS = {f.__name__: f for f in (subscribe, publish, receive, hold, takeover)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("step", choices=sorted(STEPS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--protocol", choices=["3", "5"], default="5")
    p.add_argument("--expiry", type=int, default=3600)
    p.add_argument("--topic", default="sessions/t")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--present", type=int, choices=[0, 1])
    p.add_argument("--username")
    p.add_argument("--password")
    args = p.parse_args()
    STEPS[args.step](args)
    print(f"ok {args.step}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
