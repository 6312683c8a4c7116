#!/bin/sh
# Debian's Chromium and ChromeDriver for tests/test_browser.py, installed only when missing.
# Never fails the caller: without them the browser test skips and says why, so a machine that
# cannot reach Debian's packages still runs the rest of the suite; this prints one loud line then.
set -u

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi

warn() {
    echo "!!! browser-deps: $1; tests/test_browser.py will SKIP (install chromium and chromium-driver by hand to run it)" >&2
    exit 0
}

command -v apt-get >/dev/null 2>&1 || warn "no apt-get on this machine"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || warn "not root and no sudo"
    SUDO="sudo -n"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null 2>&1 || warn "apt-get update failed"
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || warn "apt-get install chromium chromium-driver failed"
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || warn "installed, but /usr/bin/chromium or /usr/bin/chromedriver is missing"
exit 0
