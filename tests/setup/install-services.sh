#!/bin/sh
# Installs the servers the test suite runs for real, when they are missing.
# Debian's redis-server (apt, as root); the tests start their own instance on
# 127.0.0.1 and a free port, so the packaged service is not needed.
set -e
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    else
        echo "install-services: redis-server is missing and apt-get is not usable here;" \
             "the redis tests will be skipped (install redis-server to run them)" >&2
    fi
fi
