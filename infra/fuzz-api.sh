#!/usr/bin/env bash
# Schema-driven fuzzing of the tenant API: starts the local stack (devstack: moto, the local
# gateway, the real handlers) on free loopback ports and runs schemathesis with
# docs/openapi.yaml against every /v1 operation. Fails on any 5xx, any status code the document
# does not list for the operation, and any response whose body or content type does not match
# the document. Bounded: a fixed number of examples per operation, a fixed seed, one worker
# (reproducible), and a wall-clock limit. Only loopback traffic.
#
# Usage: bash infra/fuzz-api.sh [extra schemathesis run options...]
# Environment: FUZZ_PATH_REGEX (operations to test, default every /v1 path),
#              FUZZ_MAX_EXAMPLES (default 25), FUZZ_TIMEOUT (seconds, default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

path_regex=${FUZZ_PATH_REGEX:-'^/v1(/|$)'}
max_examples=${FUZZ_MAX_EXAMPLES:-25}
time_limit=${FUZZ_TIMEOUT:-600}

bash infra/bootstrap.sh
cargo build -q --bin devstack
devstack_bin=${CARGO_TARGET_DIR:-target}/debug/devstack

work=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-api.XXXXXX")
devstack_pid=
cleanup() {
  local rc=$?
  if [ -n "$devstack_pid" ] && kill -0 "$devstack_pid" 2>/dev/null; then
    # SIGINT is devstack's Ctrl-C: it stops its gateway and moto (moto also dies with it).
    kill -INT "$devstack_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$devstack_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$devstack_pid" 2>/dev/null || true
    wait "$devstack_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -s "$work/devstack.err" ]; then
    echo "fuzz-api: last lines of the local stack's log:" >&2
    tail -n 30 "$work/devstack.err" >&2
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  .venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
aws_port=$(free_port)
api_port=$(free_port)
while [ "$api_port" = "$aws_port" ]; do api_port=$(free_port); done
sandbox_port=$(free_port)
while [ "$sandbox_port" = "$aws_port" ] || [ "$sandbox_port" = "$api_port" ]; do sandbox_port=$(free_port); done

# Loopback only: devstack starts its own moto (AWS_ENDPOINT_URL unset) and its own Meta sandbox
# on loopback (GRAPH_API_BASE unset: template create, delete and sync reach a Graph API that
# answers, rather than a closed port's 502), and no proxy is used for the local addresses.
(
  unset AWS_ENDPOINT_URL GRAPH_API_BASE
  export LOCAL_AWS_PORT=$aws_port LOCAL_API_PORT=$api_port LOCAL_SANDBOX_PORT=$sandbox_port
  export RUST_LOG=${RUST_LOG:-warn}
  # One key sends every request: a quota far above the run's rate keeps the fuzzer exploring
  # the routes rather than the limiter (429 is documented on every operation all the same).
  export TENANT_REQUESTS_PER_SECOND=${TENANT_REQUESTS_PER_SECOND:-100000} TENANT_REQUEST_BURST=${TENANT_REQUEST_BURST:-100000}
  exec "$devstack_bin"
) >"$work/devstack.out" 2>"$work/devstack.err" </dev/null &
devstack_pid=$!

key=
deadline=$((SECONDS + 120))
while [ -z "$key" ]; do
  if ! kill -0 "$devstack_pid" 2>/dev/null; then
    echo "fuzz-api: the local stack exited before it was ready" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "fuzz-api: the local stack did not print its banner within 120 s" >&2
    exit 1
  fi
  key=$(sed -n 's/^ *Demo API key *\([^ ]*\).*$/\1/p' "$work/devstack.out")
  [ -n "$key" ] || sleep 0.5
done
base=http://127.0.0.1:$api_port
echo "fuzz-api: local stack up at $base (moto on 127.0.0.1:$aws_port)" >&2

export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
# Keys are `wcrm_<tenant id>_<key id>_<secret>`; the hooks keep the run from revoking its own key.
FUZZ_OWN_KEY_ID=$(cut -d_ -f3 <<<"$key")
export FUZZ_OWN_KEY_ID
export PYTHONDONTWRITEBYTECODE=1 SCHEMATHESIS_HOOKS=fuzz_hooks PYTHONPATH="$root/infra${PYTHONPATH:+:$PYTHONPATH}"
# Run from the scratch directory: whatever schemathesis/hypothesis keep on disk stays there.
status=0
(
  cd "$work"
  exec timeout --foreground --signal=INT --kill-after=30 "$time_limit" \
    "$root/.venv/bin/schemathesis" --config-file "$root/infra/schemathesis.toml" run "$root/docs/openapi.yaml" \
    --url "$base" \
    --header "Authorization: Bearer $key" \
    --include-path-regex "$path_regex" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$max_examples" \
    --seed 1 \
    --workers 1 \
    --generation-database none \
    --request-timeout 30 \
    --no-color \
    "$@"
) || status=$?

if [ "$status" -eq 124 ]; then
  echo "fuzz-api: schemathesis did not finish within ${time_limit} s" >&2
fi

# The run is only meaningful if the key it used still worked at the end.
code=$(FUZZ_URL="$base/v1/tenant" FUZZ_KEY="$key" .venv/bin/python -c '
import os, urllib.error, urllib.request
request = urllib.request.Request(os.environ["FUZZ_URL"], headers={"Authorization": "Bearer " + os.environ["FUZZ_KEY"]})
try:
    print(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10).status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError as e:
    print(f"no answer ({e})")
')
if [ "$code" != 200 ]; then
  echo "fuzz-api: after the run GET /v1/tenant with the fuzzing key answered $code, not 200" >&2
  [ "$status" -ne 0 ] || status=1
fi

if [ "$status" -ne 0 ]; then
  echo "fuzz-api: FAILED (exit status $status)" >&2
else
  echo "fuzz-api: passed" >&2
fi
exit "$status"
