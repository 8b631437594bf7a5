#!/usr/bin/env bash
# Installs what the dashboard's browser tests (tests/test_dashboard.py) need; idempotent:
# nothing is downloaded when everything is already there.
#
#   bash dashboard/install-test-deps.sh [PYTHON]     (PYTHON defaults to .venv/bin/python)
#
# - Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver, the
#   same Chromium build, so driver and browser always match), via apt when run as root;
# - Selenium from PyPI into PYTHON's environment, pinned below (with constraints.txt).
#   Selenium is told where chromedriver and chromium are, so it never downloads a driver.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-.venv/bin/python}}"
SELENIUM_PIN="selenium==4.51.0"

missing=()
[ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing ${missing[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "The dashboard tests need Chromium: sudo apt-get install -y chromium chromium-driver" >&2
    exit 1
  fi
fi

if ! "$PY" -c "import selenium" >/dev/null 2>&1; then
  echo "installing $SELENIUM_PIN into $("$PY" -c 'import sys; print(sys.prefix)')"
  if [ -f constraints.txt ]; then
    "$PY" -m pip install --quiet -c constraints.txt "$SELENIUM_PIN"
  else
    "$PY" -m pip install --quiet "$SELENIUM_PIN"
  fi
fi
