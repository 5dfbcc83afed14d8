#!/usr/bin/env bash
# Make sure Debian's Chromium and its matching chromedriver are installed for the browser tests
# (tests/e2e/test_ui.py drives /usr/bin/chromium through /usr/bin/chromedriver with selenium; nothing
# is ever downloaded by the browser tooling itself).
#
# Idempotent and quiet on success: when both binaries are already there this does nothing. Otherwise it
# installs Debian's `chromium` and `chromium-driver` packages (the driver is built from the same source
# package, so the versions always match).
set -euo pipefail

# Overridable so the install path can be exercised on a machine that already has Chromium.
CHROMIUM_BIN=${CHROMIUM_BIN:-/usr/bin/chromium}
CHROMEDRIVER_BIN=${CHROMEDRIVER_BIN:-/usr/bin/chromedriver}

have_browser() {
    [ -x "$CHROMIUM_BIN" ] && [ -x "$CHROMEDRIVER_BIN" ]
}

have_browser && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-browser: $CHROMIUM_BIN or $CHROMEDRIVER_BIN is missing and apt-get is not available;" \
        "install Chromium and a matching chromedriver" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "ensure-browser: Chromium is missing; run as root (or with sudo) to install it" >&2
        exit 1
    fi
fi

log=$(mktemp)
if ! {
    "${SUDO[@]}" apt-get update -qq &&
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium chromium-driver fonts-liberation
} >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "ensure-browser: installing the chromium and chromium-driver packages failed" >&2
    exit 1
fi
rm -f "$log"

if ! have_browser; then
    echo "ensure-browser: the packages are installed but $CHROMIUM_BIN or $CHROMEDRIVER_BIN is missing" >&2
    exit 1
fi
