"""schemathesis hooks for fleetmq (loaded through SCHEMATHESIS_HOOKS by check.sh).

- NDJSON and CSV import bodies are text: send the generated string as is.
- Idempotency-Key: a real client makes a fresh key for each request it means
  to make once. Generated keys repeat across different bodies, which the API
  rightly answers 422 (draft-ietf-httpapi-idempotency-key-header); a fresh
  key per call keeps those creates reaching the handler.
- ast.parse under a lock: with two workers Hypothesis parses lambda sources
  from two threads at once, and CPython 3.11's ast is not safe for that
  ("SystemError: AST constructor recursion depth mismatch"), which crashes
  the tool mid-run. Serialising the parse costs nothing measurable.
"""

import ast
import threading
import uuid

import schemathesis

_ast_parse = ast.parse
_ast_lock = threading.Lock()


def _locked_parse(*args, **kwargs):
    with _ast_lock:
        return _ast_parse(*args, **kwargs)


ast.parse = _locked_parse

schemathesis.serializer.alias(["application/x-ndjson", "text/csv"], "text/plain")


@schemathesis.hook
def before_call(context, case, **kwargs):
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
