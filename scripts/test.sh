#!/usr/bin/env bash
# The whole tb-cnnviz test suite, installing what it needs first:
#   a virtual environment in .venv with the package and its test extras (TensorFlow CPU build),
#   Debian's chromium, nodejs and npm (when run as root and missing),
# then node's built-in test runner for the dashboard logic, Biome (format and lint, a pinned npm
# dev dependency, installed with `npm ci`) for the dashboard's JavaScript and CSS, ruff (lint and
# format) for the Python, and pytest for everything else (unit, training, plugin, doctests and
# headless-browser end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[tensorflow-cpu,test]"

# Debian packages the tests need: chromium for the browser tests, nodejs for the dashboard's
# logic tests, npm for its formatter and linter. Installed when run as root and missing.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: missing ${missing[*]}: install Debian's packages (browser tests skip without chromium)."
  fi
fi

node --test tests/js/
if [ ! -x node_modules/.bin/biome ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --silent
fi
npx --no-install biome ci frontend tests/js
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest --doctest-modules tb_cnnviz callbacks demo tests "$@"
