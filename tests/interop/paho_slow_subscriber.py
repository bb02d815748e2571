#!/usr/bin/env python3
"""A 3.1.1 subscriber that does not acknowledge, with the Eclipse Paho
Python client (paho-mqtt 2.x), for tests/e2e/hostile_queues.rs.

    paho_slow_subscriber.py --port P --topic FILTER

Connects with MQTT 3.1.1 (which has no Receive Maximum), subscribes at
QoS 1 with manual acknowledgements on, prints "subscribed" once the SUBACK
is in, then "got N" (the running count) for every PUBLISH received. It
sends no PUBACK until a line "ack" arrives on stdin: then it acknowledges
everything received so far and keeps acknowledging from then on. Exits at
end of stdin.
"""

import argparse
import sys
import threading

import paho.mqtt.client as mqtt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topic", required=True)
    args = ap.parse_args()

    lock = threading.Lock()
    state = {"count": 0, "unacked": [], "acking": False}
    out_lock = threading.Lock()

    def say(line):
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def on_message(client, userdata, msg):
        with lock:
            state["count"] += 1
            n = state["count"]
            if state["acking"]:
                client.ack(msg.mid, msg.qos)
            else:
                state["unacked"].append((msg.mid, msg.qos))
        say(f"got {n}")

    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id="slow-311", protocol=mqtt.MQTTv311,
                         clean_session=True, reconnect_on_failure=False)
    client.manual_ack_set(True)
    client.on_message = on_message
    client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()
    client.subscribe(args.topic, qos=1)
    if not subscribed.wait(30):
        print("no SUBACK", file=sys.stderr)
        sys.exit(1)
    say("subscribed")
    for line in sys.stdin:
        if line.strip() == "ack":
            with lock:
                state["acking"] = True
                for mid, qos in state["unacked"]:
                    client.ack(mid, qos)
                state["unacked"].clear()
            say("acked")
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
