#!/usr/bin/env bash
# The console's browser tests (part of `make test`): installs what they need — Debian's
# Chromium (never a browser download) and playwright-core pinned by package-lock.json — then
# checks every module's syntax and runs the tests against a fresh local stack
# (target/debug/devstack, built by `make test` before this runs). Screenshots and the stack's
# log land in console/tests/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"

command -v node >/dev/null || { echo "console tests: node is required" >&2; exit 1; }
if ! command -v "${CHROMIUM:-/usr/bin/chromium}" >/dev/null; then
  echo "console tests: installing Debian's chromium" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq chromium >/dev/null
fi

# Reinstall only when the lockfile changed since the last install.
stamp=node_modules/.lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" > "$stamp"
fi

for module in ../*.js; do
  node --check "$module"
done

rm -rf artifacts
if [ "${1:-}" = "--bench" ]; then
  exec node bench.mjs
fi
# Each step waits at most 30 s (Playwright); the whole file at most 15 minutes.
exec timeout --kill-after=30 900 node --test --test-concurrency=1 .
