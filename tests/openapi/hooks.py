"""schemathesis hooks for fleetmq (loaded through SCHEMATHESIS_HOOKS by check.sh).

- NDJSON and CSV import bodies are text: send the generated string as is.
- Idempotency-Key: a real client makes a fresh key for each request it means
  to make once. Generated keys repeat across different bodies, which the API
  rightly answers 422 (draft-ietf-httpapi-idempotency-key-header); a fresh
  key per call keeps those creates reaching the handler.
"""

import uuid

import schemathesis

schemathesis.serializer.alias(["application/x-ndjson", "text/csv"], "text/plain")


@schemathesis.hook
def before_call(context, case, **kwargs):
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
