#!/usr/bin/env bash
# The test command: installs what the tests need (this package with its test extras, Debian's Chromium
# for the browser tests) and runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
python3 -m pip install -q -e '.[test]'
# axe-core for the accessibility tests: into an ignored folder, never into the site.
if [ ! -f .cache/node_modules/axe-core/axe.min.js ] && command -v npm >/dev/null; then
  npm install --silent --no-audit --no-fund --prefix .cache axe-core@4.14.1 >/dev/null || echo "axe-core not installed: accessibility tests will skip"
fi
exec python3 -m pytest "$@"
