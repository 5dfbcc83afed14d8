#!/usr/bin/env bash
# Install the Debian packages the test suite needs, when they are missing:
#   postgres  - PostgreSQL server binaries (tests/helpers/postgres.py starts a throwaway server on a loopback port)
#   browser   - Chromium and its matching chromedriver (tests/e2e/test_ui.py; nothing is downloaded by tooling)
#   compose   - docker-compose, to validate docker-compose.yaml (no Docker engine is needed for that)
#   redis     - redis-server, for the shared rate-limit budget tests
# Usage: scripts/ensure-packages.sh postgres browser compose redis
#
# Idempotent and quiet on success. Package post-install scripts are kept from starting services (the
# tests start their own servers), and apt's output is shown only when the install fails.
set -euo pipefail

have() {
    case "$1" in
        postgres) compgen -G "${PG_INITDB_GLOB:-/usr/lib/postgresql/*/bin/initdb}" >/dev/null ;;
        browser) [ -x "${CHROMIUM_BIN:-/usr/bin/chromium}" ] && [ -x "${CHROMEDRIVER_BIN:-/usr/bin/chromedriver}" ] ;;
        compose) command -v docker-compose >/dev/null 2>&1 ;;
        redis) command -v redis-server >/dev/null 2>&1 ;;
        *) echo "ensure-packages: unknown component '$1'" >&2; exit 2 ;;
    esac
}

packages_for() {
    case "$1" in
        postgres) echo postgresql ;;
        browser) echo chromium chromium-driver fonts-liberation ;;
        compose) echo docker-compose ;;
        redis) echo redis-server ;;
    esac
}

wanted=()
for component in "$@"; do
    have "$component" || wanted+=($(packages_for "$component"))
done
[ ${#wanted[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-packages: missing ${wanted[*]} and apt-get is not available; install them by hand" >&2
    exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "ensure-packages: missing ${wanted[*]}; run as root (or with sudo) to install them" >&2
        exit 1
    fi
fi

# A policy-rc.d answering 101 ("action forbidden") keeps postinst scripts from starting the PostgreSQL
# cluster or redis-server; only a policy we created is removed afterwards.
POLICY=/usr/sbin/policy-rc.d
OUR_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    OUR_POLICY=1
fi
log=$(mktemp)
cleanup() {
    [ "$OUR_POLICY" = 1 ] && "${SUDO[@]}" rm -f "$POLICY"
    rm -f "$log"
}
trap cleanup EXIT

if ! {
    "${SUDO[@]}" apt-get update -qq &&
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${wanted[@]}"
} >"$log" 2>&1; then
    cat "$log" >&2
    echo "ensure-packages: installing ${wanted[*]} failed" >&2
    exit 1
fi
for component in "$@"; do
    if ! have "$component"; then
        echo "ensure-packages: installed $(packages_for "$component") but '$component' is still not usable" >&2
        exit 1
    fi
done
