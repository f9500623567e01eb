#!/usr/bin/env bash
# Installs what nbidle's tests and demo run against, when missing, and
# caches it: Prometheus + promtool, Alertmanager + amtool (Debian packages),
# and Jupyter in a venv under $NBIDLE_CACHE (default ~/.cache/nbidle).
# Debian's jupyter-server 1.23 is installed too, as the old version.
# Prints the environment to export (NBIDLE_JUPYTER, NBIDLE_JUPYTER_OLD).
set -euo pipefail

cache="${NBIDLE_CACHE:-$HOME/.cache/nbidle}"
mkdir -p "$cache"

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
command -v amtool >/dev/null || need_apt+=(prometheus-alertmanager)
[ -x /usr/bin/jupyter-server ] || need_apt+=(jupyter-server python3-ipykernel)
# The demo and the Kubernetes tests talk HTTP(S) with curl; envtest needs a key.
command -v curl >/dev/null || need_apt+=(curl)
command -v openssl >/dev/null || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test-deps: need root to install: ${need_apt[*]}" >&2
    exit 1
  fi
  echo "test-deps: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start system services here; tests start their own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
  rm -f /usr/sbin/policy-rc.d
fi

venv="$cache/venv"
stamp="$venv/.nbidle-deps-v1"
if [ ! -f "$stamp" ]; then
  echo "test-deps: creating $venv (jupyter_server 2.x, jupyterlab, ipykernel)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'jupyter_server>=2,<3' jupyterlab ipykernel >&2
  touch "$stamp"
fi

# A real SMTP receiver for the warning email example (tests/warnings.rs).
smtp_stamp="$venv/.nbidle-smtp-v1"
if [ ! -f "$smtp_stamp" ]; then
  echo "test-deps: installing aiosmtpd into $venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check 'aiosmtpd>=1.4,<2' >&2
  touch "$smtp_stamp"
fi

echo "NBIDLE_JUPYTER=$venv/bin/jupyter"
echo "NBIDLE_JUPYTER_OLD=/usr/bin/jupyter-server"
