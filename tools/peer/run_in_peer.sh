#!/usr/bin/env bash
# Runs one command inside the PyTorch 2.6 peer made by provision_pytorch_peer.sh.
#
# Usage (as root):
#   DCP_PEER_SHARE=/abs/exchange/dir tools/peer/run_in_peer.sh python3 /abs/path/script.py args...
#
# What the command sees:
#   - the peer's Debian 13 root (torch 2.6.0, Python 3.13) as /;
#   - this script's directory (tools/peer) read-only at its own absolute path,
#     so `python3 "$PWD/tools/peer/dcp_peer.py"` works unchanged;
#   - every directory listed in DCP_PEER_SHARE (colon-separated, absolute,
#     must exist) read-write at the same absolute path as on the host;
#   - a fresh /proc, the host's /dev, a read-only /sys and a private, empty
#     tmpfs on /tmp;
#   - a clean environment: PATH, HOME=/root, LANG=C.UTF-8, TMPDIR=/tmp,
#     USE_LIBUV=0 (Debian's torch has no libuv TCPStore), GLOO_SOCKET_IFNAME=lo,
#     PYTHONDONTWRITEBYTECODE=1, OMP_NUM_THREADS=1, plus every DCP_PEER_*
#     variable of the caller;
#   - the caller's working directory if it is visible in the peer, else /.
#
# Each invocation runs in its own mount and PID namespaces (unshare), so
# concurrent invocations never share a mount, all mounts disappear when the
# command ends (the EXIT trap also unmounts them explicitly), and every process
# the command started is killed when it ends or when this script is killed.
# Exits with the command's exit code.
#
# Environment:
#   DCP_TORCH_PEER   the peer's root directory (default /var/cache/dcp/pytorch-peer)
#   DCP_PEER_SHARE   colon-separated host directories to make visible (optional)
set -euo pipefail

readonly PEER_DIR="${DCP_TORCH_PEER:-/var/cache/dcp/pytorch-peer}"
readonly MARKER=".dcp-peer-provisioned"

die() { echo "run_in_peer: error: $*" >&2; exit 125; }

[ "$#" -ge 1 ] || die "usage: run_in_peer.sh COMMAND [ARGS...]"
[ "$(id -u)" -eq 0 ] || die "must run as root (chroot and mount need it)"

if [ -z "${DCP_PEER_IN_NAMESPACE:-}" ]; then
  [ -f "$PEER_DIR/$MARKER" ] \
      || die "no provisioned peer in $PEER_DIR; run tools/peer/provision_pytorch_peer.sh first"
  # A shared lock: runs proceed in parallel, re-provisioning waits for them.
  exec 9>"${PEER_DIR}.lock"
  flock -s 9
  # unshare ignores SIGTERM and SIGINT while it waits, so this script stays in
  # front of it: on a signal it SIGKILLs unshare, --kill-child then SIGKILLs
  # the namespace's init, and the kernel kills everything else in the
  # namespace. (`0<&0` keeps stdin: a background job would get /dev/null.)
  unshare --mount --propagation private --pid --fork --kill-child \
      env DCP_PEER_IN_NAMESPACE=1 bash "${BASH_SOURCE[0]}" "$@" 0<&0 &
  ns_pid=$!
  trap 'kill -KILL "$ns_pid" 2>/dev/null; exit 129' HUP
  trap 'kill -KILL "$ns_pid" 2>/dev/null; exit 130' INT
  trap 'kill -KILL "$ns_pid" 2>/dev/null; exit 143' TERM
  rc=0
  wait "$ns_pid" || rc=$?
  exit "$rc"
fi

# --- Inside the private mount and PID namespaces -----------------------------

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"

mounted=()
unmount_all() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -R "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null || true
  done
  mounted=()
}
trap unmount_all EXIT

# bind_into_peer HOST_DIR MODE(ro|rw): makes HOST_DIR visible at the same path.
bind_into_peer() {
  local src="$1" mode="$2" dst="$PEER_DIR$1"
  mkdir -p "$dst"
  mount --bind "$src" "$dst"
  mounted+=("$dst")
  if [ "$mode" = ro ]; then mount -o remount,bind,ro "$dst"; fi
}

mount -t proc proc "$PEER_DIR/proc"
mounted+=("$PEER_DIR/proc")
mount --rbind /dev "$PEER_DIR/dev"
mounted+=("$PEER_DIR/dev")
mkdir -p "$PEER_DIR/sys"
mount --bind /sys "$PEER_DIR/sys"
mounted+=("$PEER_DIR/sys")
mount -o remount,bind,ro "$PEER_DIR/sys"
mount -t tmpfs -o mode=1777 tmpfs "$PEER_DIR/tmp"
mounted+=("$PEER_DIR/tmp")

# Parents before children, so that nested directories both stay visible.
shares=()
if [ -n "${DCP_PEER_SHARE:-}" ]; then
  IFS=: read -r -a shares <<< "$DCP_PEER_SHARE"
fi
binds=("ro $script_dir")
for share in "${shares[@]}"; do
  [ -n "$share" ] || continue
  case "$share" in /*) ;; *) die "DCP_PEER_SHARE entry '$share' is not an absolute path" ;; esac
  [ -d "$share" ] || die "DCP_PEER_SHARE entry '$share' is not an existing directory"
  binds+=("rw $(cd "$share" && pwd -P)")
done
while read -r mode dir; do
  bind_into_peer "$dir" "$mode"
done < <(printf '%s\n' "${binds[@]}" | awk '{print length($2), $0}' | sort -n -s | cut -d' ' -f2-)

# Keep the caller's working directory if the peer can see it.
workdir=/
caller_dir="$(pwd -P)"
for entry in "${binds[@]}"; do
  dir="${entry#* }"
  case "$caller_dir/" in "$dir"/*) workdir="$caller_dir" ;; esac
done

passed_env=()
while IFS= read -r name; do
  passed_env+=("$name=${!name}")
done < <(compgen -e | grep '^DCP_PEER_' | grep -v '^DCP_PEER_IN_NAMESPACE$' || true)

rc=0
chroot "$PEER_DIR" /usr/bin/env -i -C "$workdir" \
    PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    HOME=/root LANG=C.UTF-8 TMPDIR=/tmp \
    USE_LIBUV=0 GLOO_SOCKET_IFNAME=lo PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=1 \
    "${passed_env[@]}" \
    "$@" || rc=$?
exit "$rc"
