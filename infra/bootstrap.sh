#!/usr/bin/env bash
# Creates the repo-local virtualenv with the pinned local-stack tools. Idempotent: re-runs only
# when infra/requirements.txt changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp="$venv/.requirements.sha256"
want=$(sha256sum infra/requirements.txt | cut -d' ' -f1)
if [ -x "$venv/bin/moto_server" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "bootstrap: $python not found (need Python >= 3.9)" >&2; exit 1; }
echo "bootstrap: installing pinned tools into $venv" >&2
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/pip" install --quiet --disable-pip-version-check -r infra/requirements.txt
echo "$want" > "$stamp"
