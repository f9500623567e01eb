#!/usr/bin/env bash
# Builds, tests and installs nbidle's JupyterLab extension (jupyterlab/,
# pip package nbidle-jupyterlab) into the venv of scripts/test-deps.sh,
# cached under $NBIDLE_CACHE (default ~/.cache/nbidle):
#   jupyterlab-ext/   a copy of jupyterlab/ to build in, with node_modules
#                     installed by `npm ci` only when package-lock.json changes
#   wheels/<hash>/    the wheel, built only when jupyterlab/ changes
# Steps: npm ci, tsc + labextension build, jest, wheel, pip install into the
# venv, pytest against the installed package, and a check that Jupyter lists
# both extensions enabled. Messages go to stderr; prints
# NBIDLE_JUPYTERLAB_WHEEL=<path>.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
src="$here/jupyterlab"
cache="${NBIDLE_CACHE:-$HOME/.cache/nbidle}"
venv="$cache/venv"
build="$cache/jupyterlab-ext"
say() { echo "jupyterlab-ext: $*" >&2; }
# Runs a step quietly; on failure shows its output.
quiet() {
  local log
  log="$(mktemp)"
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    say "failed: $*"
    exit 1
  fi
  rm -f "$log"
}

if [ ! -x "$venv/bin/python" ]; then
  say "no venv at $venv: run scripts/test-deps.sh first"
  exit 1
fi
# The frontend is built with Node from the npm registry: Debian's nodejs
# and npm when missing (as root), as scripts/browser-deps.sh does.
if ! command -v npm >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    say "need root to install: nodejs npm"
    exit 1
  fi
  say "installing nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends nodejs npm >&2
fi

# The sources that make the package: tracked and new files, not what is ignored.
sources() {
  if git -C "$here" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$here" && git ls-files -co --exclude-standard -- jupyterlab)
  else
    (cd "$here" && find jupyterlab -type f -not -path '*/node_modules/*' -not -path '*/lib/*' \
      -not -path '*/labextension/*' -not -path '*/__pycache__/*' -not -path '*/.pytest_cache/*' \
      -not -name '*.tsbuildinfo')
  fi | LC_ALL=C sort
}
src_hash="$(cd "$here" && sources | while read -r f; do [ -f "$f" ] && printf '%s\n' "$f" && cat "$f"; done | sha256sum | cut -c1-16)"
lock_hash="$(sha256sum "$src/package-lock.json" | cut -c1-16)"
wheel_dir="$cache/wheels/$src_hash"
installed_stamp="$venv/.nbidle-jupyterlab-$src_hash"

wheel="$(ls "$wheel_dir"/nbidle_jupyterlab-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$wheel" ] || [ ! -f "$installed_stamp" ]; then
  mkdir -p "$build"
  if [ ! -f "$build/.nbidle-lock-$lock_hash" ] || [ ! -d "$build/node_modules" ]; then
    say "npm ci in $build (package-lock.json changed)"
    rm -rf "$build/node_modules" "$build"/.nbidle-lock-*
    cp "$src/package.json" "$src/package-lock.json" "$build/"
    quiet npm ci --prefix "$build" --no-audit --no-fund --loglevel=error
    touch "$build/.nbidle-lock-$lock_hash"
  fi

  if [ -z "$wheel" ]; then
    say "building the extension and its wheel"
    start=$(date +%s)
    # A fresh copy of the sources next to the cached node_modules.
    find "$build" -mindepth 1 -maxdepth 1 -not -name node_modules -not -name '.nbidle-lock-*' -exec rm -rf {} +
    rm -rf "$build.tmp"
    mkdir -p "$build.tmp"
    (cd "$here" && sources | while read -r f; do [ -f "$f" ] && printf '%s\0' "$f"; done | xargs -0 cp --parents -t "$build.tmp")
    cp -a "$build.tmp/jupyterlab/." "$build/"
    rm -rf "$build.tmp"
    quiet npm run --prefix "$build" build:lib
    (cd "$build" && quiet npm run build:labextension)
    (cd "$build" && quiet npx jest --ci)
    "$venv/bin/python" -c 'import hatchling' 2>/dev/null ||
      quiet "$venv/bin/pip" install -q --disable-pip-version-check 'hatchling>=1.21'
    tmp_wheels="$(mktemp -d)"
    quiet "$venv/bin/pip" wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$tmp_wheels" "$build"
    mkdir -p "$wheel_dir"
    mv "$tmp_wheels"/nbidle_jupyterlab-*.whl "$wheel_dir/"
    rm -rf "$tmp_wheels"
    wheel="$(ls "$wheel_dir"/nbidle_jupyterlab-*.whl | head -1)"
    say "built $wheel ($(stat -c %s "$wheel") bytes) in $(($(date +%s) - start)) s"
  fi

  say "installing $(basename "$wheel") into $venv"
  quiet "$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"
  "$venv/bin/python" -c 'import pytest' 2>/dev/null ||
    quiet "$venv/bin/pip" install -q --disable-pip-version-check 'pytest>=7'
  # From the build copy's tests, so the installed package is the one imported.
  say "pytest against the installed package"
  (cd "$build/tests" && quiet "$venv/bin/pytest" -q -p no:cacheprovider "$build/tests")
  rm -f "$venv"/.nbidle-jupyterlab-*
  touch "$installed_stamp"
fi

# Both halves enabled, as Jupyter itself sees them.
plain() { sed 's/\x1b\[[0-9;]*m//g'; }
labext="$("$venv/bin/jupyter" labextension list 2>&1 | plain)"
if ! grep -E 'nbidle-jupyterlab .*enabled.*OK' <<<"$labext" >/dev/null; then
  echo "$labext" >&2
  say "jupyter labextension list does not show nbidle-jupyterlab enabled"
  exit 1
fi
serverext="$("$venv/bin/jupyter" server extension list 2>&1 | plain)"
if ! grep -E 'nbidle_jupyterlab enabled' <<<"$serverext" >/dev/null; then
  echo "$serverext" >&2
  say "jupyter server extension list does not show nbidle_jupyterlab enabled"
  exit 1
fi

echo "NBIDLE_JUPYTERLAB_WHEEL=$wheel"
