#!/usr/bin/env bash
# The programs the tests run besides Python (tests/support/tools.py lists them, with their
# Debian packages). Missing ones are installed here when we are root with apt-get (one
# `apt-get update`, then one install); otherwise this prints the command that would install
# them. It never fails the run: a test whose program is missing is skipped, and the test
# run's last line says which and how to install them.
# Usage: scripts/test_deps.sh [PYTHON]   (the venv's python; `make test` passes it)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-python3}"

packages="$("$python" -m tests.support.tools)"
if [ -z "$packages" ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing the Debian packages the tests use: $packages"
  # shellcheck disable=SC2086  # $packages is a list of names
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        -o DPkg::Lock::Timeout=300 $packages >/dev/null); then
    echo "warning: could not install $packages; the tests that need them will be skipped" >&2
  fi
else
  echo "note: the tests that need $packages will be skipped; to run them too:"
  echo "  sudo apt-get update && sudo apt-get install -y $packages"
fi
