#!/usr/bin/env bash
# Installs what tests/browser.rs drives, when missing, and caches it:
# Debian's Chromium, and Playwright's client library (npm playwright-core,
# pinned in tests/browser/package-lock.json) under
# $NBIDLE_CACHE/browser (default ~/.cache/nbidle/browser). Playwright runs
# the system Chromium; it downloads no browser of its own.
# Prints the environment to export (NBIDLE_BROWSER_MODULES, NBIDLE_CHROMIUM).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cache="${NBIDLE_CACHE:-$HOME/.cache/nbidle}"
mkdir -p "$cache"

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "browser-deps: need root to install: ${need_apt[*]}" >&2
    exit 1
  fi
  echo "browser-deps: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start system services here; tests start their own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
  rm -f /usr/sbin/policy-rc.d
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "browser-deps: playwright-core needs Node.js 20 or later, found $(node --version)" >&2
  exit 1
fi

# Installed again only when the lock file changes.
dir="$cache/browser"
lock="$here/tests/browser/package-lock.json"
stamp="$dir/.nbidle-lock-$(sha256sum "$lock" | cut -c1-16)"
if [ ! -f "$stamp" ] || [ ! -d "$dir/node_modules/playwright-core" ]; then
  echo "browser-deps: installing playwright-core into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$here/tests/browser/package.json" "$lock" "$dir/"
  # No browser download: the tests launch /usr/bin/chromium.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >&2
  touch "$stamp"
fi

echo "NBIDLE_BROWSER_MODULES=$dir/node_modules"
echo "NBIDLE_CHROMIUM=/usr/bin/chromium"
