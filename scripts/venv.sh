#!/usr/bin/env bash
# Installs the Python tools the tests need into .venv (pinned in scripts/requirements-test.txt)
# and DuckDB 2 into .venv/duckdb2 (a second DuckDB for the storage recipe; the pinned 1.5 is
# the one the Delta extension works with). Does nothing when the pins have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
req=scripts/requirements-test.txt
constraints=scripts/constraints-test.txt
stamp="$venv/.requirements-test.sha256"
want="$(sha256sum "$req" "$constraints" "$0" | sha256sum | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "venv: installing the test tools of $req into $venv" >&2
python3 -m venv "$venv"
pip=("$venv/bin/pip" install --quiet --disable-pip-version-check)
"${pip[@]}" -r "$req" -c "$constraints"
"${pip[@]}" --upgrade --target "$venv/duckdb2" duckdb==2.0.1
echo "$want" > "$stamp"
