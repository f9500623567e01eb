#!/usr/bin/env bash
# Builds the two binaries an envtest-style control plane needs -- etcd and
# kube-apiserver -- and the kubectl the deploy tests render and apply
# kustomizations with, from source, and caches them under
#   ${NBIDLE_CACHE:-$HOME/.cache/nbidle}/envtest/<k8s version>/bin/
# Prints NBIDLE_KUBECTL=<path of kubectl>, then NBIDLE_ENVTEST_BIN=<that dir>
# as the last line on stdout; all progress goes to stderr. A second run finds
# the cache and returns at once without calling `go`. Each binary has its own
# version stamp, so a cache from before kubectl was added keeps its etcd and
# kube-apiserver and only kubectl is built.
#
# Why from source: the only network this has to work with is package
# registries, so prebuilt release tarballs (dl.k8s.io, GitHub releases) are
# out. Everything here is fetched by the `go` tool through the module proxy.
#
# Settings (environment):
#   NBIDLE_K8S_VERSION   Kubernetes release to build (default below). Must be
#                        served by the proxy: `go list -m -versions k8s.io/kubernetes`.
#   NBIDLE_ETCD_VERSION  etcd version; default is whatever go.etcd.io/etcd/server/v3
#                        version that Kubernetes release pins in its go.mod.
#   NBIDLE_CACHE         cache root (default ~/.cache/nbidle).
#
# Needs: go (>= the `go` line of the chosen Kubernetes go.mod), flock, ~2 GB RAM
# for the kube-apiserver link. First build is a few minutes on 2 cores; the Go
# build cache ($(go env GOCACHE)) is left in its default place so rebuilds of
# other versions reuse most of it.
set -euo pipefail

k8s_version="${NBIDLE_K8S_VERSION:-v1.32.13}"
cache="${NBIDLE_CACHE:-$HOME/.cache/nbidle}"
root="$cache/envtest/$k8s_version"
bin="$root/bin"

log() { echo "envtest: $*" >&2; }

# Fast path: every binary present and stamped as fully built (the stamps are
# written only after a build passed its --version check, so a killed build never
# looks complete). If an explicit etcd version was requested, it must match.
control_plane_cached() {
  [ -x "$bin/kube-apiserver" ] && [ -x "$bin/etcd" ] || return 1
  [ "$(cat "$bin/.kube-apiserver.version" 2>/dev/null)" = "$k8s_version" ] || return 1
  [ -f "$bin/.etcd.version" ] || return 1
  if [ -n "${NBIDLE_ETCD_VERSION:-}" ]; then
    [ "$(cat "$bin/.etcd.version")" = "$NBIDLE_ETCD_VERSION" ] || return 1
  fi
}
kubectl_cached() {
  [ -x "$bin/kubectl" ] && [ "$(cat "$bin/.kubectl.version" 2>/dev/null)" = "$k8s_version" ]
}
cached() { control_plane_cached && kubectl_cached; }
report() {
  echo "NBIDLE_KUBECTL=$bin/kubectl"
  echo "NBIDLE_ENVTEST_BIN=$bin"
}
if cached; then
  report
  exit 0
fi

command -v go >/dev/null || { log "go not found in PATH"; exit 1; }
mkdir -p "$bin"

# Serialise concurrent runs (e.g. parallel test jobs) so only one builds; the
# others wait and then take the fast path.
exec 9>"$root/.lock"
flock 9
if cached; then
  report
  exit 0
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/nbidle-envtest.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# The throwaway modules live in $tmp; make sure no go.work above it (or in the
# environment) pulls other modules in.
export GOWORK=off
# Static binaries, as the upstream release builds are (no libc dependency).
export CGO_ENABLED=0
# The machine is small and shared: run every go command at the lowest priority.
gogo() { nice -n 19 go "$@"; }

# --- Kubernetes source -------------------------------------------------------
# Download the k8s.io/kubernetes module (zip + go.mod) into the module cache;
# we need its go.mod to learn the staging modules, the pinned etcd version, and
# the go/godebug lines.
log "fetching k8s.io/kubernetes@$k8s_version"
k8s_dir="$(gogo mod download -json "k8s.io/kubernetes@$k8s_version" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
k8s_gomod="$k8s_dir/go.mod"
[ -f "$k8s_gomod" ] || { log "no go.mod for k8s.io/kubernetes@$k8s_version (got dir '$k8s_dir')"; exit 1; }

# Kubernetes publishes each staging module k8s.io/<x> with tag v0.Y.Z for
# release v1.Y.Z (v1.32.13 -> v0.32.13).
case "$k8s_version" in
  v1.*) staging_version="v0.${k8s_version#v1.}" ;;
  *) log "unexpected Kubernetes version '$k8s_version' (want v1.Y.Z)"; exit 1 ;;
esac

etcd_version="${NBIDLE_ETCD_VERSION:-$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$k8s_gomod")}"
[ -n "$etcd_version" ] || { log "can't find go.etcd.io/etcd/server/v3 in $k8s_gomod; set NBIDLE_ETCD_VERSION"; exit 1; }

# --- kube-apiserver and kubectl -----------------------------------------------
# `go install k8s.io/kubernetes/cmd/kube-apiserver@v1.Y.Z` is refused: the
# kubernetes go.mod requires its staging modules at v0.0.0 and replaces them
# with ./staging/src/k8s.io/<x>, and `go install pkg@version` rejects modules
# with replace directives. So build each command from a throwaway main module
# that requires k8s.io/kubernetes and replaces every staging module with its
# published v0.Y.Z release instead of the local directory. The go and godebug
# lines are copied so the runtime GODEBUG defaults match an upstream build.
# (Replacements are only fetched for modules actually in the build; e.g. the
# k8s.io/sample-* ones are listed but never downloaded.)
build_k8s_cmd() {
  local name="$1" mod="$tmp/$1"
  mkdir -p "$mod"
  {
    echo "module nbidle.local/envtest/$name"
    echo
    grep -E '^go [0-9]' "$k8s_gomod"
    # godebug may be single lines or a `godebug ( ... )` block.
    awk '/^godebug \(/ { b = 1 } b || /^godebug / { print } b && /^\)/ { b = 0 }' "$k8s_gomod"
    echo
    echo "require k8s.io/kubernetes $k8s_version"
    echo
    echo "replace ("
    awk -v v="$staging_version" '$1 ~ /^k8s\.io\// && $2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $1, $1, v }' "$k8s_gomod"
    echo ")"
  } > "$mod/go.mod"
  local n
  n="$(grep -c ' => ' "$mod/go.mod" || true)"
  [ "$n" -gt 0 ] || { log "found no staging replace directives in $k8s_gomod"; exit 1; }
  log "$name: $n staging modules -> $staging_version"

  # Resolve and record every module the command's package needs (go.mod
  # + go.sum); `go build` alone refuses to add missing requirements.
  (cd "$mod" && gogo get "k8s.io/kubernetes/cmd/$name@$k8s_version" >&2)

  # Version info normally injected by hack/lib/version.sh; without it
  # `--version` and /version report v0.0.0-master. buildDate is the release's
  # commit time from the proxy, so the link is reproducible and cacheable.
  local minor="${k8s_version#v1.}"; minor="${minor%%.*}"
  local date
  date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$k8s_version.info" 2>/dev/null || true)"
  local ld="-s -w" p
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld="$ld -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    [ -z "$date" ] || ld="$ld -X $p.buildDate=$date"
  done

  log "$name: building (takes minutes on a cold build cache)"
  (cd "$mod" && gogo build -trimpath -ldflags "$ld" -o "$tmp/out/$name" "k8s.io/kubernetes/cmd/$name")
}

# --- etcd --------------------------------------------------------------------
# etcd's own main module (go.etcd.io/etcd/v3) also uses replace directives, so
# `go install` is refused there too. Its main() is one call to
# etcdmain.Main(os.Args) (signature checked in server/v3/etcdmain/main.go of
# v3.5), so a three-line main module requiring go.etcd.io/etcd/server/v3 at the
# version Kubernetes pins builds the same binary. `go mod tidy` resolves the
# rest from etcd's own go.mod files.
build_etcd() {
  local mod="$tmp/etcd"
  mkdir -p "$mod"
  cat > "$mod/main.go" <<'EOF'
// Equivalent of etcd's own main.go: the etcd server binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  printf 'module nbidle.local/envtest/etcd\n\ngo 1.22\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$etcd_version" > "$mod/go.mod"
  (cd "$mod" && gogo mod tidy >&2)
  log "etcd: building $etcd_version"
  (cd "$mod" && gogo build -trimpath -ldflags "-s -w" -o "$tmp/out/etcd" .)
}

# Check that a binary runs before it enters the cache, then move it in
# (write to a temp name in $bin first so the final rename is atomic).
install_bin() {
  cp "$tmp/out/$1" "$bin/.$1.tmp"
  mv -f "$bin/.$1.tmp" "$bin/$1"
}

mkdir -p "$tmp/out"
start=$SECONDS
if ! control_plane_cached; then
  build_etcd
  build_k8s_cmd kube-apiserver
  "$tmp/out/etcd" --version >&2
  "$tmp/out/kube-apiserver" --version >&2
  install_bin etcd
  install_bin kube-apiserver
  echo "$etcd_version" > "$bin/.etcd.version"
  echo "$k8s_version" > "$bin/.kube-apiserver.version"
  log "built etcd $etcd_version and kube-apiserver $k8s_version in $((SECONDS - start))s"
fi
if ! kubectl_cached; then
  start=$SECONDS
  build_k8s_cmd kubectl
  "$tmp/out/kubectl" version --client >&2
  install_bin kubectl
  echo "$k8s_version" > "$bin/.kubectl.version"
  log "built kubectl $k8s_version in $((SECONDS - start))s"
fi

report
