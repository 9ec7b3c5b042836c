#!/usr/bin/env bash
# Debian's headless Chromium for the upload-page test (tests/test_serve_browser.py), installed once; a no-op
# when present. `make test` runs it so that it is the same as CI; without root or passwordless sudo it says
# in one line that the browser test will be skipped, unless REQUIRE_BROWSER=1 (CI), where that is an error.
set -uo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "${REQUIRE_BROWSER:-0}" = "1" ]; then
  echo "error: could not install Chromium (apt-get install chromium needs root or passwordless sudo)" >&2
  exit 1
fi
echo "note: Chromium is not installed and could not be (needs root): the upload-page browser test will be skipped" >&2
