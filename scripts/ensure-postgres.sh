#!/usr/bin/env bash
# Make sure PostgreSQL server binaries are installed for the tests (tests/postgres.py starts a throwaway
# server from /usr/lib/postgresql/*/bin on a loopback port; it never uses the Debian cluster service).
#
# Idempotent and quiet on success: when initdb is already there this does nothing. Otherwise it installs
# Debian's `postgresql` package without letting the package start a cluster service.
set -euo pipefail

# Overridable so the install path can be exercised on a machine that already has PostgreSQL.
PG_INITDB_GLOB=${PG_INITDB_GLOB:-/usr/lib/postgresql/*/bin/initdb}

have_initdb() {
    local f
    for f in $PG_INITDB_GLOB; do
        [ -x "$f" ] && return 0
    done
    return 1
}

have_initdb && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: PostgreSQL server binaries are missing and apt-get is not available;" \
        "install PostgreSQL (initdb, pg_ctl) under /usr/lib/postgresql/<version>/bin" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "ensure-postgres: PostgreSQL is missing; run as root (or with sudo) to install it" >&2
        exit 1
    fi
fi

# Keep the package's postinst from starting the main cluster (`invoke-rc.d postgresql start`): a
# policy-rc.d that answers 101 ("action forbidden") does that. Only ours is removed afterwards.
POLICY=/usr/sbin/policy-rc.d
OUR_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    OUR_POLICY=1
fi
cleanup() {
    if [ "$OUR_POLICY" = 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
trap cleanup EXIT

log=$(mktemp)
if ! {
    "${SUDO[@]}" apt-get update -qq &&
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            postgresql
} >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "ensure-postgres: installing the postgresql package failed" >&2
    exit 1
fi
rm -f "$log"

# Belt and braces: if a cluster got started anyway (e.g. a service manager ignored policy-rc.d), stop it;
# the tests start their own server and must not depend on, or collide with, this one.
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header 2>/dev/null | while read -r ver name _port status _rest; do
        case "$status" in
        online*) "${SUDO[@]}" pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true ;;
        esac
    done
fi

if ! have_initdb; then
    echo "ensure-postgres: the postgresql package is installed but no initdb matches $PG_INITDB_GLOB" >&2
    exit 1
fi
