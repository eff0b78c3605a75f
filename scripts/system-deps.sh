#!/usr/bin/env bash
# Installs the Debian packages the tests drive where they are missing: a headless Chromium
# and its driver (the console's browser test), the PostgreSQL client (psql, for the Postgres
# wire protocol test) and openssl (its TLS test makes a certificate). Needs apt-get and root
# (or sudo); prints what to install otherwise.
set -euo pipefail
want=()
command -v chromium >/dev/null || want+=(chromium)
command -v chromedriver >/dev/null || want+=(chromium-driver)
command -v psql >/dev/null || want+=(postgresql-client)
command -v openssl >/dev/null || want+=(openssl)
if [[ ${#want[@]} -eq 0 ]]; then
  exit 0
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then sudo=(sudo); else
    echo "system-deps: install ${want[*]} (apt-get install ${want[*]}) and run again" >&2
    exit 1
  fi
fi
echo "system-deps: installing ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >&2
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${want[@]}" >&2
