#!/usr/bin/env bash
# Fuzzes the real server from its own description: schemathesis generates requests from
# /openapi.json (valid ones, and ones the description says are invalid), sends them with an
# admin key to sluice on the mock upstream, and checks every answer against the description
# (status codes, bodies, headers, that what the description refuses is refused, no 5xx),
# including its stateful phase that follows the links from create to get/update/delete.
#
#   tests/fuzz/schemathesis.sh [--database-url URL] [-- extra schemathesis arguments]
#
# Needs `schemathesis` on PATH (or SCHEMATHESIS=path) and the debug binaries
# (`cargo build --bin sluice --example mock_upstream`). Exits with schemathesis's status.
set -euo pipefail
cd "$(dirname "$0")/../.."

database_url=""
while [ $# -gt 0 ]; do
  case "$1" in
    --database-url) database_url="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

schemathesis="${SCHEMATHESIS:-schemathesis}"
bin="${CARGO_TARGET_DIR:-target}/debug"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing answered at $1" >&2
  return 1
}

mock_port="$(free_port)"
"$bin/examples/mock_upstream" --listen "127.0.0.1:$mock_port" >"$work/mock.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$mock_port/v1/models"

# Messages of at most 1000 characters: the description says the configured limit, and with the
# default (100000) schemathesis cannot build the longest valid message and sends an invalid one
# as if it were valid.
printf '[limits]\nmax_message_chars = 1000\n' >"$work/sluice.toml"

port="$(free_port)"
key="sk_live_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
SLUICE_CONFIG="$work/sluice.toml" SLUICE_LISTEN="127.0.0.1:$port" \
  SLUICE_DATABASE_URL="${database_url:-sqlite://$work/sluice.db?mode=rwc}" \
  SLUICE_ADMIN_KEY="$key" \
  OPENAI_API_KEY=mock OPENAI_BASE_URL="http://127.0.0.1:$mock_port/v1" \
  SLUICE_RATE_LIMIT_SECRET=1000000 SLUICE_RATE_LIMIT_PUBLISHABLE=1000000 \
  RUST_LOG="${RUST_LOG:-warn}" \
  "$bin/sluice" >"$work/sluice.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$port/healthz"

status=0
"$schemathesis" --config-file tests/fuzz/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks all \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-25}" \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --request-timeout 30 \
  --no-color \
  "$@" || status=$?

if grep -E "panicked|ERROR" "$work/sluice.log" >/dev/null; then
  echo "== sluice logged errors or a panic:" >&2
  grep -E "panicked|ERROR" "$work/sluice.log" | head -20 >&2
  status=1
fi
exit "$status"
