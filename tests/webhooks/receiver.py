#!/usr/bin/env python3
"""A webhook receiver for the e2e tests, verifying every request with the
`standardwebhooks` package (an implementation of Standard Webhooks that is not
fleetmq's).

It listens on 127.0.0.1:0 and prints `listening PORT`, then one JSON line per
request on stdout: {path, at (monotonic seconds), webhook_id, answered,
verified, error, body}. The test configures each path with
`POST /_control {"path", "secret", "fail_first", "down"}`:
- secret: the endpoint's `whsec_` secret; requests that do not verify get 401;
- fail_first: answer 503 to the first N attempts of each webhook-id;
- down: answer 503 to everything while true.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

LOCK = threading.Lock()
PATHS = {}  # path -> {"secret", "fail_first", "down"}
ATTEMPTS = {}  # (path, webhook-id) -> attempts seen


def emit(record):
    with LOCK:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass  # stdout is the test's channel; stay quiet on stderr too

    def answer(self, status, text=""):
        body = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        at = time.monotonic()
        length = int(self.headers.get("content-length", "0"))
        data = self.rfile.read(length)
        if self.path == "/_control":
            control = json.loads(data)
            with LOCK:
                config = PATHS.setdefault(control["path"], {})
                for key in ("secret", "fail_first", "down"):
                    if key in control:
                        config[key] = control[key]
            self.answer(204)
            return
        with LOCK:
            config = dict(PATHS.get(self.path, {}))
            webhook_id = self.headers.get("webhook-id", "")
            attempt = ATTEMPTS.get((self.path, webhook_id), 0) + 1
            ATTEMPTS[(self.path, webhook_id)] = attempt
        record = {
            "path": self.path,
            "at": at,
            "webhook_id": webhook_id,
            "verified": False,
            "error": None,
            "body": None,
        }
        try:
            headers = {k: v for k, v in self.headers.items()}
            record["body"] = Webhook(config["secret"]).verify(data, headers)
            record["verified"] = True
        except (WebhookVerificationError, KeyError, ValueError) as e:
            record["error"] = f"{type(e).__name__}: {e}"
        if not record["verified"]:
            status = 401
        elif config.get("down") or attempt <= config.get("fail_first", 0):
            status = 503
        else:
            status = 200
        record["answered"] = status
        emit(record)
        self.answer(status, "ok" if status == 200 else "not now")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    emit({"listening": server.server_address[1]})
    server.serve_forever()


if __name__ == "__main__":
    main()
