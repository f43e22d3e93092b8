#!/usr/bin/env bash
# The contract check (`make contract`): schemathesis' every check against the fake-engine
# app's OpenAPI document, with the hooks that state the rules across fields.
# ST: the schemathesis command; PY: the project's Python; ARGS: more `st run` arguments.
set -euo pipefail
port=${PORT:-8010}
log=$(mktemp)
"$PY" tests/contract/fake_app.py --port "$port" >"$log" 2>&1 &
app=$!
trap 'kill -TERM "$app" 2>/dev/null; wait "$app" || true; rm -f "$log"' EXIT
for _ in $(seq 120); do
    grep -q '^READY' "$log" && break
    kill -0 "$app" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 1
done
grep -q '^READY' "$log" || { echo "the fake-engine app was not ready in 120 s" >&2; exit 1; }
# shellcheck disable=SC2086  # ARGS is a list of words
SCHEMATHESIS_HOOKS=tests/contract/hooks.py "$ST" run "http://127.0.0.1:$port/openapi.json" \
    --checks all ${ARGS:-}
