#!/usr/bin/env bash
# Provisions the PyTorch 2.6 interop peer: a Debian 13 (trixie) root directory
# with python3-torch (torch 2.6.0 on Python 3.13) installed from the Debian
# archive. dcp's interop tests run PyTorch's own torch.distributed.checkpoint in
# it (through tools/peer/run_in_peer.sh) to prove that both implementations
# read each other's checkpoints.
#
# Usage (as root):   bash tools/peer/provision_pytorch_peer.sh
# Environment:
#   DCP_TORCH_PEER         the peer's root directory
#                          (default /var/cache/dcp/pytorch-peer)
#   DCP_TORCH_PEER_MIRROR  Debian mirror URL; by default the first Debian
#                          (non-security) mirror of this machine's apt sources
#
# Idempotent: a peer whose marker file exists and whose `import torch` reports
# 2.6.x is reused untouched. A half-finished provision is resumed (debootstrap
# finished: the package installation is re-run) or redone (debootstrap did not
# finish: the directory is removed and created again). Concurrent runs
# serialize on a lock file next to the directory.
#
# The mirror's host name is read at run time and is never printed: every line
# of output from debootstrap and apt-get passes through a filter that replaces
# it with "<mirror>".
set -euo pipefail

readonly PEER_DIR="${DCP_TORCH_PEER:-/var/cache/dcp/pytorch-peer}"
readonly SUITE="trixie"
readonly MARKER=".dcp-peer-provisioned"
readonly IN_PROGRESS=".dcp-peer-provisioning"

log() { echo "provision_pytorch_peer: $*"; }
die() { echo "provision_pytorch_peer: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot and mount need it)"
case "$PEER_DIR" in
  /*) ;;
  *) die "DCP_TORCH_PEER must be an absolute path, got '$PEER_DIR'" ;;
esac
[ "$PEER_DIR" != "/" ] || die "DCP_TORCH_PEER must not be /"

# All mounts made below happen in a private mount namespace, so they vanish
# when this script ends, even if it is killed with SIGKILL. The trap further
# down unmounts them explicitly as well.
if [ -z "${DCP_PEER_PRIVATE_NS:-}" ]; then
  exec unshare --mount --propagation private \
      env DCP_PEER_PRIVATE_NS=1 bash "${BASH_SOURCE[0]}" "$@"
fi

mkdir -p "$(dirname "$PEER_DIR")"
exec 9>"${PEER_DIR}.lock"
if ! flock -n 9; then
  log "another provision or peer run holds ${PEER_DIR}.lock; waiting for it"
  flock 9
fi

# --- Reuse -----------------------------------------------------------------

# Prints the torch version the peer reports, or nothing if it cannot import
# torch. Runs without /proc; torch imports fine without it.
peer_torch_version() {
  [ -x "$PEER_DIR/usr/bin/python3" ] || return 0
  chroot "$PEER_DIR" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      PYTHONDONTWRITEBYTECODE=1 \
      /usr/bin/python3 -c 'import torch; print("TORCH_VERSION=" + torch.__version__)' \
      2>/dev/null | sed -n 's/^TORCH_VERSION=//p' || true
}

is_torch_26() { case "$1" in 2.6.*) return 0 ;; *) return 1 ;; esac; }

mounted=()
unmount_all() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null || true
  done
  mounted=()
}
trap unmount_all EXIT

mount_peer_dirs() {
  mkdir -p "$PEER_DIR/proc" "$PEER_DIR/dev"
  mount -t proc proc "$PEER_DIR/proc"
  mounted+=("$PEER_DIR/proc")
  mount --bind /dev "$PEER_DIR/dev"
  mounted+=("$PEER_DIR/dev")
}

if [ -f "$PEER_DIR/$MARKER" ]; then
  version="$(peer_torch_version)"
  if is_torch_26 "$version"; then
    log "reusing the peer in $PEER_DIR (torch $version)"
    exit 0
  fi
  log "the peer in $PEER_DIR is marked as provisioned but torch reports '${version:-nothing}'; redoing the package installation"
  rm -f "$PEER_DIR/$MARKER"
fi

# --- Mirror ------------------------------------------------------------------

# Prints the first Debian (non-security) mirror URL of the host's apt sources.
find_mirror() {
  local f uri
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    # deb822: "URIs: url [url...]"
    while read -r uri; do
      case "$uri" in *security*) continue ;; esac
      echo "${uri%/}"; return 0
    done < <(sed -n 's/^[[:space:]]*URIs:[[:space:]]*//p' "$f" | tr ' \t' '\n\n' | grep -E '^https?://' || true)
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # one-line format: "deb [opts] url suite components"
    while read -r uri; do
      case "$uri" in *security*) continue ;; esac
      echo "${uri%/}"; return 0
    done < <(sed -n 's/^[[:space:]]*deb[[:space:]]\+//p' "$f" | sed 's/\[[^]]*\][[:space:]]*//' \
               | awk '{print $1}' | grep -E '^https?://' || true)
  done
  return 1
}

MIRROR="${DCP_TORCH_PEER_MIRROR:-}"
if [ -z "$MIRROR" ]; then
  MIRROR="$(find_mirror)" || die "found no http(s) Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d/; set DCP_TORCH_PEER_MIRROR"
fi
# The authority part (host, port, credentials) is what must never be printed.
mirror_authority="${MIRROR#*://}"
mirror_authority="${mirror_authority%%/*}"
[ -n "$mirror_authority" ] || die "cannot parse the mirror URL from the apt sources"
mirror_authority_re="$(printf '%s' "$mirror_authority" | sed 's/[][\.*^$/#|]/\\&/g')"
redact() { sed -u "s#${mirror_authority_re}#<mirror>#g"; }
mirror_scheme="${MIRROR%%://*}"
mirror_path=""
case "${MIRROR#*://}" in */*) mirror_path="/${MIRROR#*://*/}" ;; esac
log "using the Debian mirror of this machine's apt sources (${mirror_scheme}://<mirror>${mirror_path})"

# --- Host tools --------------------------------------------------------------

export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap on the host"
  if ! apt-get install -y -q --no-install-recommends debootstrap 2>&1 | redact; then
    log "installing debootstrap failed; updating the host's package lists and retrying"
    apt-get update -q 2>&1 | redact
    apt-get install -y -q --no-install-recommends debootstrap 2>&1 | redact
  fi
fi
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is still missing after apt-get install"

# --- Base system -------------------------------------------------------------

# Refuses to delete anything that is mounted on or below the peer directory.
assert_nothing_mounted_below() {
  if awk -v d="$PEER_DIR" '$5 == d || index($5, d "/") == 1 {found = 1} END {exit !found}' \
      /proc/self/mountinfo; then
    die "something is mounted below $PEER_DIR; unmount it before re-provisioning"
  fi
}

base_complete() {
  [ -x "$PEER_DIR/usr/bin/apt-get" ] && [ -x "$PEER_DIR/usr/bin/dpkg" ] \
      && [ ! -e "$PEER_DIR/debootstrap" ]
}

if [ -d "$PEER_DIR" ] && ! base_complete; then
  if [ -n "$(ls -A "$PEER_DIR" 2>/dev/null)" ]; then
    [ -e "$PEER_DIR/$IN_PROGRESS" ] \
        || die "$PEER_DIR is not empty and was not created by this script; refusing to delete it"
    log "removing the unfinished base system in $PEER_DIR"
    assert_nothing_mounted_below
    rm -rf --one-file-system "$PEER_DIR"
  fi
fi

started=$SECONDS
if ! base_complete; then
  mkdir -p "$PEER_DIR"
  touch "$PEER_DIR/$IN_PROGRESS"
  include=()
  if [ "$mirror_scheme" = "https" ]; then include=(--include=ca-certificates); fi
  log "debootstrap --variant=minbase $SUITE $PEER_DIR <mirror> (a few minutes)"
  debootstrap --variant=minbase "${include[@]}" "$SUITE" "$PEER_DIR" "$MIRROR" 2>&1 | redact
  base_complete || die "debootstrap finished but $PEER_DIR is not a complete base system"
  log "base system ready after $((SECONDS - started)) s"
else
  log "base system in $PEER_DIR already complete; resuming with the package installation"
  touch "$PEER_DIR/$IN_PROGRESS"
fi

# --- python3-torch -----------------------------------------------------------

mount_peer_dirs
cp -L /etc/resolv.conf "$PEER_DIR/etc/resolv.conf" 2>/dev/null || true

in_peer() {
  chroot "$PEER_DIR" /usr/bin/env -i \
      PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
      DEBIAN_FRONTEND=noninteractive "$@"
}

log "apt-get update in the peer"
in_peer apt-get update -q 2>&1 | redact
log "finishing any interrupted package configuration in the peer"
in_peer dpkg --configure -a 2>&1 | redact
log "apt-get install python3-torch in the peer (about 192 MB download)"
in_peer apt-get install -y -q --no-install-recommends python3-torch 2>&1 | redact
log "cleaning the peer's package cache"
in_peer apt-get clean 2>&1 | redact

version="$(peer_torch_version)"
is_torch_26 "$version" || die "torch in the peer reports '${version:-nothing (import failed)}', expected 2.6.x"
python_version="$(in_peer python3 -c 'import platform; print(platform.python_version())' 2>/dev/null || true)"

{
  echo "torch=$version"
  echo "python=$python_version"
  echo "suite=$SUITE"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$PEER_DIR/$MARKER.tmp"
mv "$PEER_DIR/$MARKER.tmp" "$PEER_DIR/$MARKER"
rm -f "$PEER_DIR/$IN_PROGRESS"
log "done after $((SECONDS - started)) s: torch $version on Python $python_version in $PEER_DIR ($(du -sh --one-file-system "$PEER_DIR" 2>/dev/null | cut -f1))"
