#!/usr/bin/env bash
# Installs what tests/jupyterhub.rs runs, when missing, and caches it:
# JupyterHub 5.x (PyPI `jupyterhub`) into the venv scripts/test-deps.sh
# makes (beside jupyter_server 2.x, whose single-user servers it spawns),
# with `jupyterhub-idle-culler` (benches/jupyterhub.rs measures it beside
# nbidle),
# and its proxy, npm `configurable-http-proxy` (pinned in
# tests/hub/package-lock.json), under $NBIDLE_CACHE/hub (default
# ~/.cache/nbidle/hub). Needs node and npm (scripts/browser-deps.sh).
# Prints the environment to export (NBIDLE_JUPYTERHUB, NBIDLE_CHP).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cache="${NBIDLE_CACHE:-$HOME/.cache/nbidle}"
mkdir -p "$cache"

venv="$cache/venv"
if [ ! -f "$venv/.nbidle-deps-v1" ]; then
  bash "$here/scripts/test-deps.sh" >/dev/null
fi
stamp="$venv/.nbidle-hub-v1"
if [ ! -f "$stamp" ]; then
  echo "hub-deps: installing jupyterhub 5.x into $venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check 'jupyterhub>=5,<6' >&2
  touch "$stamp"
fi
culler_stamp="$venv/.nbidle-hub-culler-v1"
if [ ! -f "$culler_stamp" ]; then
  echo "hub-deps: installing jupyterhub-idle-culler into $venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check 'jupyterhub-idle-culler>=1.4,<2' >&2
  touch "$culler_stamp"
fi

for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "hub-deps: $tool is missing; run: bash scripts/browser-deps.sh" >&2
    exit 1
  fi
done

# Installed again only when the lock file changes.
dir="$cache/hub"
lock="$here/tests/hub/package-lock.json"
lock_stamp="$dir/.nbidle-lock-$(sha256sum "$lock" | cut -c1-16)"
if [ ! -f "$lock_stamp" ] || [ ! -x "$dir/node_modules/.bin/configurable-http-proxy" ]; then
  echo "hub-deps: installing configurable-http-proxy into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$here/tests/hub/package.json" "$lock" "$dir/"
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >&2
  touch "$lock_stamp"
fi

echo "NBIDLE_JUPYTERHUB=$venv/bin/jupyterhub"
echo "NBIDLE_CHP=$dir/node_modules/.bin/configurable-http-proxy"
