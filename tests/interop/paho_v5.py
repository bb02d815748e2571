#!/usr/bin/env python3
"""MQTT 5 interop checks against a running fleetmq, with the Eclipse Paho
Python client (paho-mqtt 2.x), a client we did not write.

    paho_v5.py SCENARIO --host H --port P [--transport tcp|tls|ws] [--cafile F]

Each scenario prints "ok SCENARIO" and exits 0, or fails with an assertion
naming what was wrong. Driven by tests/e2e/interop_paho.rs; every client id
and topic is scenario-local so scenarios may share a server.
"""

import argparse
import os
import queue
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 15.0  # generous: the machine is shared


def props(packet_type, **values):
    p = Properties(packet_type)
    for name, value in values.items():
        setattr(p, name, value)
    return p


class Peer:
    """One paho client on paho's network thread, without automatic
    reconnection (a lost connection stays lost, as the tests need)."""

    def __init__(self, args, client_id="", clean_start=True, will=None,
                 keepalive=30, **connect_props):
        transport = "websockets" if args.transport == "ws" else "tcp"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id, protocol=mqtt.MQTTv5,
                                  transport=transport, reconnect_on_failure=False)
        if args.transport == "ws":
            self.client.ws_set_options(path="/mqtt")
        if args.transport == "tls":
            self.client.tls_set(ca_certs=args.cafile)
        self.messages = queue.Queue()
        self.disconnects = queue.Queue()
        self.connacks = queue.Queue()
        self.subacks = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc)
        self.client.on_connect = lambda c, u, f, rc, p: self.connacks.put((f, rc, p))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        if will is not None:
            self.client.will_set(**will)
        self.client.connect(args.host, args.port, keepalive=keepalive,
                            clean_start=clean_start,
                            properties=props(PacketTypes.CONNECT, **connect_props)
                            if connect_props else None)
        # paho's own thread: it alone touches the socket (a TLS socket
        # must not be read and written from two threads at once).
        self.client.loop_start()
        flags, self.reason, self.connack_props = self.connacks.get(timeout=WAIT)
        self.session_present = flags.session_present

    def subscribe(self, filter, qos=1, sub_id=None, **options):
        p = props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=sub_id) if sub_id else None
        self.client.subscribe([(filter, SubscribeOptions(qos=qos, **options))], properties=p)
        codes = self.subacks.get(timeout=WAIT)
        assert all(not c.is_failure for c in codes), f"SUBACK {codes}"
        return codes

    def publish(self, topic, payload, qos=1, retain=False, **publish_props):
        p = props(PacketTypes.PUBLISH, **publish_props) if publish_props else None
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=p)
        if qos > 0:
            info.wait_for_publish(timeout=WAIT)
            assert info.is_published(), f"no ack for {topic}"

    def next(self, timeout=WAIT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message arrived") from None

    def quiet(self, seconds):
        """Asserts nothing arrives for `seconds` (only after a positive control)."""
        try:
            m = self.messages.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {m.topic!r}: {m.payload!r}")

    def close(self):
        if self.client.is_connected():
            self.client.disconnect()
        self.client.loop_stop()


def check_basic(args):
    sub = Peer(args, "basic-sub")
    sub.subscribe("basic/#", qos=1)
    pub = Peer(args, "basic-pub")
    pub.publish("basic/hello", b"over " + args.transport.encode(), qos=1)
    m = sub.next()
    assert (m.topic, m.payload) == ("basic/hello", b"over " + args.transport.encode())
    pub.close(); sub.close()


def check_qos(args):
    """QoS 0/1/2 both ways, downgraded to the subscription's maximum."""
    subs = {q: Peer(args, f"qos-sub{q}") for q in (0, 1, 2)}
    for q, s in subs.items():
        s.subscribe("qos/t", qos=q)
    pub = Peer(args, "qos-pub")
    for q in (0, 1, 2):
        pub.publish("qos/t", f"q{q}".encode(), qos=q)
        for sq, s in subs.items():
            m = s.next()
            assert m.payload == f"q{q}".encode(), m.payload
            assert m.qos == min(q, sq), (q, sq, m.qos)
    for s in [pub, *subs.values()]:
        s.close()


def check_retained(args):
    pub = Peer(args, "ret-pub")
    pub.publish("ret/a", b"first", retain=True)
    pub.publish("ret/a", b"second", retain=True)  # replaces
    pub.publish("ret/b", b"doomed", retain=True)
    pub.publish("ret/b", b"", retain=True)  # deletes
    s = Peer(args, "ret-sub")
    s.subscribe("ret/#", qos=1)
    m = s.next()
    assert (m.topic, m.payload, m.retain) == ("ret/a", b"second", True), m
    s.quiet(0.5)  # ret/b is gone
    # Retain handling 1: only for a new subscription; 2: never.
    s.subscribe("ret/#", qos=1, retainHandling=1)
    s2 = Peer(args, "ret-sub2")
    s2.subscribe("ret/+", qos=1, retainHandling=2)
    # Retain As Published: live messages keep RETAIN only with it set.
    s3 = Peer(args, "ret-rap")
    s3.subscribe("ret/a", qos=1, retainAsPublished=True)
    assert s3.next().retain  # the stored one, sent on subscribe
    pub.publish("ret/a", b"live", retain=True)
    assert s3.next().retain, "retain-as-published lost RETAIN"
    m = s.next()
    assert (m.payload, m.retain) == (b"live", False), m
    m = s2.next()
    assert (m.payload, m.retain) == (b"live", False), "retain handling 2 sent the stored one"
    s.quiet(0.5)
    for c in (pub, s, s2, s3):
        c.close()


def die_with_will(args, client_id, delay, expiry):
    """Connects with a will in a child process that then exits without
    DISCONNECT, as a device losing power would."""
    code = (
        "import sys, os, time; sys.path.insert(0, os.path.dirname(sys.argv[1]));"
        "import paho_v5 as t; a = t.parse(sys.argv[2:]);"
        f"w = dict(topic='will/{client_id}', payload=b'gone', qos=1, "
        f"properties=t.props(t.PacketTypes.WILLMESSAGE, WillDelayInterval={delay}, ContentType='text/plain'));"
        f"p = t.Peer(a, '{client_id}', clean_start=True, will=w, SessionExpiryInterval={expiry});"
        "time.sleep(0.3); os._exit(0)"
    )
    forwarded = ["--host", args.host, "--port", str(args.port), "--transport", args.transport]
    if args.cafile:
        forwarded += ["--cafile", args.cafile]
    subprocess.run([sys.executable, "-c", code, os.path.abspath(__file__), "x", *forwarded],
                   check=True, timeout=WAIT)


def check_will(args):
    watcher = Peer(args, "will-watch")
    watcher.subscribe("will/#", qos=1)
    # A will with no delay: out at once, with its properties.
    die_with_will(args, "w-now", delay=0, expiry=0)
    m = watcher.next()
    assert (m.topic, m.payload) == ("will/w-now", b"gone"), m
    assert m.properties.ContentType == "text/plain"
    # Delayed 2 s, but the client is back within it (Clean Start 0): cancelled.
    die_with_will(args, "w-back", delay=2, expiry=30)
    back = Peer(args, "w-back", clean_start=False, SessionExpiryInterval=30)
    assert back.session_present
    # Delayed 1 s and nobody comes back: published after the delay.
    die_with_will(args, "w-late", delay=1, expiry=30)
    m = watcher.next()
    assert m.topic == "will/w-late", f"expected w-late's will, got {m.topic}"
    watcher.quiet(2.5)  # w-back's delay has passed: its will must not come
    # Delayed 60 s, but the session ends first (expiry 1 s): published then.
    die_with_will(args, "w-expiry", delay=60, expiry=1)
    m = watcher.next()
    assert m.topic == "will/w-expiry", m.topic
    back.close(); watcher.close()


def offline_subscriber(args, client_id, filter):
    """A fresh 60 s session subscribed to `filter` at QoS 1, then offline."""
    s = Peer(args, client_id, clean_start=True, SessionExpiryInterval=60)
    s.subscribe(filter, qos=1)
    s.close()


def check_session(args):
    offline_subscriber(args, "sess-1", "sess/#")
    pub = Peer(args, "sess-pub")
    for i in range(3):
        pub.publish(f"sess/{i}", str(i).encode(), qos=1)
    pub.publish("sess/q0", b"qos0 is not queued", qos=0)
    # Acknowledged after the QoS 0 one was handled (same connection, in order).
    pub.publish("sess/3", b"3", qos=1)
    s = Peer(args, "sess-1", clean_start=False, SessionExpiryInterval=60)
    assert s.session_present, "session not kept"
    got = [s.next().payload for _ in range(4)]
    assert got == [b"0", b"1", b"2", b"3"], got
    s.quiet(0.5)
    # A short session expires while offline.
    s.client.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=1))
    s.client.loop_stop()
    time.sleep(2.5)
    s = Peer(args, "sess-1", clean_start=False, SessionExpiryInterval=60)
    assert not s.session_present, "expired session came back"
    s.close(); pub.close()


def check_takeover(args):
    old = Peer(args, "take-1")
    new = Peer(args, "take-1")
    rc = old.disconnects.get(timeout=WAIT)
    assert rc.value == 0x8E, f"old connection closed with {rc} ({rc.value:#x})"
    new.publish("take/x", b"still works", qos=1)
    new.close()


def check_shared(args):
    members = [Peer(args, f"share-{i}") for i in range(2)]
    for m in members:
        m.subscribe("$share/g/jobs/#", qos=1)
    pub = Peer(args, "share-pub")
    for i in range(20):
        pub.publish(f"jobs/{i}", str(i).encode(), qos=1)
    got = [[], []]
    deadline = time.time() + WAIT
    while len(got[0]) + len(got[1]) < 20 and time.time() < deadline:
        for i, m in enumerate(members):
            try:
                got[i].append(m.messages.get(timeout=0.05).payload)
            except queue.Empty:
                pass
    all_got = sorted(int(p) for p in got[0] + got[1])
    assert all_got == list(range(20)), f"each message once: {all_got}"
    assert got[0] and got[1], f"one member got everything: {got}"
    # A member leaves: the group carries on with the other.
    members[0].close()
    pub.publish("jobs/after", b"after", qos=1)
    assert members[1].next().payload == b"after"
    members[1].close(); pub.close()


def check_aliases(args):
    # Server -> client: we announce a Topic Alias Maximum; repeats of a
    # topic come with an empty topic and the alias (paho leaves resolving
    # them to us, which shows what was on the wire).
    sub = Peer(args, "alias-sub", TopicAliasMaximum=5)
    sub.subscribe("alias/#", qos=1)
    pub = Peer(args, "alias-pub")
    assert pub.connack_props.TopicAliasMaximum >= 1
    # Client -> server: the topic once with alias 1, then the alias alone.
    pub.publish("alias/long/topic/name", b"1", qos=1, TopicAlias=1)
    pub.publish("", b"2", qos=1, TopicAlias=1)
    pub.publish("", b"3", qos=1, TopicAlias=1)
    known = {}
    resolved = []
    for _ in range(3):
        m = sub.next()
        alias = getattr(m.properties, "TopicAlias", None)
        if m.topic:
            if alias:
                known[alias] = m.topic
            resolved.append((m.topic, m.payload))
        else:
            assert alias in known, f"unknown alias {alias}"
            resolved.append((known[alias], m.payload))
    assert resolved == [("alias/long/topic/name", str(i).encode()) for i in (1, 2, 3)], resolved
    assert known, "the server never used a topic alias towards us"
    sub.close(); pub.close()


def check_expiry(args):
    offline_subscriber(args, "exp-sub", "exp/#")
    pub = Peer(args, "exp-pub")
    pub.publish("exp/short", b"stale", qos=1, MessageExpiryInterval=1)
    pub.publish("exp/long", b"fresh", qos=1, MessageExpiryInterval=100)
    time.sleep(2.5)
    s = Peer(args, "exp-sub", clean_start=False, SessionExpiryInterval=60)
    m = s.next()
    assert (m.topic, m.payload) == ("exp/long", b"fresh"), m.topic
    left = m.properties.MessageExpiryInterval
    assert left < 100, f"forwarded expiry must be what remains, got {left}"
    s.quiet(0.5)
    s.close(); pub.close()


def check_properties(args):
    sub = Peer(args, "prop-sub")
    sub.subscribe("prop/#", qos=1, sub_id=7)
    sub.subscribe("prop/+/x", qos=1, sub_id=9)
    pub = Peer(args, "prop-pub")
    pub.publish("prop/a/x", b'{"v":1}', qos=1, UserProperty=[("k", "v"), ("k", "w")],
                ContentType="application/json", PayloadFormatIndicator=1,
                ResponseTopic="prop/reply", CorrelationData=b"\x00\x01corr")
    m = sub.next()
    p = m.properties
    assert p.UserProperty == [("k", "v"), ("k", "w")], p.UserProperty
    assert p.ContentType == "application/json"
    assert p.PayloadFormatIndicator == 1
    assert p.ResponseTopic == "prop/reply"
    assert p.CorrelationData == b"\x00\x01corr"
    # Overlapping subscriptions: one copy with both identifiers (MQTT-3.3.5-1).
    assert sorted(p.SubscriptionIdentifier) == [7, 9], p.SubscriptionIdentifier
    sub.quiet(0.5)
    # No Local: our own publish is not sent back; another client's is.
    sub.subscribe("nolocal/t", qos=1, noLocal=True)
    sub.publish("nolocal/t", b"mine", qos=1)
    pub.publish("nolocal/t", b"theirs", qos=1)
    assert sub.next().payload == b"theirs"
    sub.quiet(0.5)
    sub.close(); pub.close()


def check_limits(args):
    """Run against a server started with --mqtt-max-packet-size 2048 and
    --mqtt-max-keep-alive 5."""
    # Keep alive: 60 asked, 5 imposed and announced (MQTT-3.2.2-21).
    c = Peer(args, "lim-ka", keepalive=60)
    assert c.connack_props.ServerKeepAlive == 5, c.connack_props
    assert c.connack_props.MaximumPacketSize == 2048
    c.close()
    # Client id assignment (MQTT-3.1.3-6).
    a = Peer(args, "")
    assigned = a.connack_props.AssignedClientIdentifier
    assert assigned, "no Assigned Client Identifier"
    a.close()
    # Our Maximum Packet Size: a larger PUBLISH is a disconnect with 0x95.
    small = Peer(args, "lim-small", MaximumPacketSize=256)
    small.subscribe("lim/#", qos=0)
    big = Peer(args, "lim-big")
    big.publish("lim/big", b"x" * 1000, qos=0)  # within ours, over the client's
    big.publish("lim/small", b"tiny", qos=0)
    m = small.next()
    assert m.topic == "lim/small", f"a packet over the client's maximum was sent: {m.topic}"
    big.client.publish("lim/huge", b"x" * 4000, qos=0)
    rc = big.disconnects.get(timeout=WAIT)
    assert rc.value == 0x95, f"{rc} ({rc.value:#x})"
    small.close()
    # Enhanced authentication is answered "bad authentication method".
    auth = Peer(args, "lim-auth", AuthenticationMethod="SCRAM-SHA-256")
    assert auth.reason.value == 0x8C, f"{auth.reason} ({auth.reason.value:#x})"
    auth.client.loop_stop()


CHECKS = {name[len("check_"):].replace("_", "-"): f
          for name, f in globals().items() if name.startswith("check_")}


def parse(argv):
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=sorted(CHECKS) + ["x"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--transport", choices=["tcp", "tls", "ws"], default="tcp")
    p.add_argument("--cafile")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse(sys.argv[1:])
    CHECKS[args.scenario](args)
    print(f"ok {args.scenario}")
