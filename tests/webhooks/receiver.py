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

With `--models FILE`, FILE is a Python module generated from openapi.json's
OpenAPI 3.1 `webhooks` by datamodel-code-generator (a generator that is not
fleetmq's): every verified body is also validated against the generated model
for its `type`, and the record says so in `schema` ("ok", or why not).
"""

import argparse
import enum
import importlib.util
import json
import sys
import threading
import typing
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

LOCK = threading.Lock()
PATHS = {}  # path -> {"secret", "fail_first", "down"}
ATTEMPTS = {}  # (path, webhook-id) -> attempts seen
MODELS = None  # event type -> generated pydantic model, with --models


def load_models(path):
    """The generated request-body model of each webhook, by its event type:
    the model whose `type` field is an enum of that one event type."""
    spec = importlib.util.spec_from_file_location("fleetmq_webhooks", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # for its forward references
    spec.loader.exec_module(module)
    models = {}
    for name in dir(module):
        model = getattr(module, name)
        fields = getattr(model, "model_fields", None)
        if not name.endswith("PostRequest") or not fields or "type" not in fields:
            continue
        # The module says `from __future__ import annotations`: resolve.
        kind = typing.get_type_hints(model).get("type")
        if isinstance(kind, type) and issubclass(kind, enum.Enum) and len(kind) == 1:
            models[next(iter(kind)).value] = model
    return models


def check_schema(body):
    model = MODELS.get(body.get("type")) if isinstance(body, dict) else None
    if model is None:
        return f"no generated model for type {body.get('type') if isinstance(body, dict) else body!r}"
    try:
        model.model_validate(body)
    except Exception as e:  # pydantic's ValidationError, said as it is
        return f"{type(e).__name__}: {e}"
    return "ok"


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
            "schema": None,
        }
        try:
            headers = {k: v for k, v in self.headers.items()}
            record["body"] = Webhook(config["secret"]).verify(data, headers)
            record["verified"] = True
            if MODELS is not None:
                record["schema"] = check_schema(record["body"])
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
    global MODELS
    parser = argparse.ArgumentParser(description="webhook receiver for the e2e tests")
    parser.add_argument("--models", help="module generated from openapi.json's webhooks")
    args = parser.parse_args()
    if args.models:
        MODELS = load_models(args.models)
        if not MODELS:
            sys.exit(f"{args.models}: no webhook request models found")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    emit({"listening": server.server_address[1], "models": sorted(MODELS or [])})
    server.serve_forever()


if __name__ == "__main__":
    main()
