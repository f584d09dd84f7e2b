#!/usr/bin/env bash
# `make package`: cross-builds every function that template.yaml declares for arm64 (Graviton,
# provided.al2023) with cargo-lambda + zig from the repo's virtualenv, writes
# target/lambda/<binary>/bootstrap.zip, and lists the stripped binary and zip sizes.
#
# `sam build` (BuildMethod: rust-cargolambda) runs the same `cargo lambda build`; it finds
# cargo-lambda when .venv/bin is on PATH:  PATH="$PWD/.venv/bin:$PATH" sam build
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/bootstrap.sh
venv=.venv
stamp="$venv/.requirements-package.sha256"
want=$(sha256sum infra/requirements-package.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/cargo-lambda" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "package: installing cargo-lambda and zig into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r infra/requirements-package.txt
  echo "$want" > "$stamp"
fi
# cargo-lambda on PATH for `cargo lambda`; zig is found as `python3 -m ziglang` (the venv's python).
export PATH="$PWD/$venv/bin:$PATH"

bins=$(awk '/BuildMethod: rust-cargolambda/ {f = 1} f && /Binary:/ {print $2; f = 0}' template.yaml)
[ -n "$bins" ] || { echo "package: no rust-cargolambda functions in template.yaml" >&2; exit 1; }
args=()
for b in $bins; do args+=(--bin "$b"); done

# One invocation builds every function (shared dependencies compile once). The release profile
# in Cargo.toml sets strip/lto/codegen-units/panic explicitly, so cargo-lambda adds nothing.
cargo lambda build --release --arm64 "${args[@]}"
for b in $bins; do
  dir=target/lambda/$b
  [ -f "$dir/bootstrap" ] || { echo "package: $dir/bootstrap missing" >&2; exit 1; }
  rm -f "$dir/bootstrap.zip"
  (cd "$dir" && zip -q -X -9 bootstrap.zip bootstrap)
done

printf '%-12s %14s %14s\n' function "binary (bytes)" "zip (bytes)"
for b in $bins; do
  dir=target/lambda/$b
  printf '%-12s %14s %14s\n' "$b" "$(stat -c %s "$dir/bootstrap")" "$(stat -c %s "$dir/bootstrap.zip")"
done
file "target/lambda/$(echo "$bins" | head -1)/bootstrap" 2>/dev/null || true
