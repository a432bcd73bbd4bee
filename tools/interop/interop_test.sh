#!/usr/bin/env bash
# Interop tests between dcp and real PyTorch 2.6 (tools/peer/README.md).
#
#   interop_test.sh pytorch_to_dcp   PyTorch saves each case with N ranks
#                                    (dcp_peer.py save); dcp_interop loads it
#                                    with M != N simulated ranks (another
#                                    layout) and compares every element.
#   interop_test.sh train_resume     a tiny model and AdamW trained 3 steps
#                                    and saved by one side (2 ranks) are
#                                    resumed by the other (1 and 3 ranks)
#                                    for step 4, which must match both
#                                    sides' uninterrupted step 4
#                                    (train_peer.py, train_interop).
#   interop_test.sh dcp_to_pytorch   dcp_interop saves each case with N
#                                    simulated ranks; dcp_peer.py load with
#                                    M != N ranks compares every element, and
#                                    its rank 0 checks .metadata (keys,
#                                    dtypes, sizes, chunks, planner_data).
#
# Run by Bazel (tools/interop:*_test, tags "manual", "local", "interop"):
#   bazel test //tools/interop:pytorch_to_dcp_test //tools/interop:dcp_to_pytorch_test
# Needs root and a provisioned peer at $DCP_TORCH_PEER (default
# /var/cache/dcp/pytorch-peer; see tools/peer/provision_pytorch_peer.sh).
# Every case runs even after a failure; the summary lists each one.
set -uo pipefail

die() { echo "interop_test: error: $*" >&2; exit 1; }

[ "$#" -eq 1 ] || die "usage: interop_test.sh pytorch_to_dcp|dcp_to_pytorch|train_resume"
readonly MODE="$1"

# Bazel's test PATH has no sbin, where chroot, mount and unshare live.
export PATH="$PATH:/usr/sbin:/sbin"
peer="${DCP_TORCH_PEER:-/var/cache/dcp/pytorch-peer}"
[ "$(id -u)" -eq 0 ] || die "must run as root (the PyTorch peer needs chroot and mount)"
[ -f "$peer/.dcp-peer-provisioned" ] || die "no provisioned PyTorch 2.6 peer in $peer" \
    "(DCP_TORCH_PEER); run tools/peer/provision_pytorch_peer.sh as root first"

runfiles="${TEST_SRCDIR:?not run by bazel test}/${TEST_WORKSPACE:-dcp}"
interop="$runfiles/tools/interop/dcp_interop"
[ -x "$interop" ] || die "missing $interop"
train="$runfiles/tools/interop/train_interop"
[ -x "$train" ] || die "missing $train"
# run_in_peer.sh binds its own directory into the peer, so call it (and
# dcp_peer.py) from the real tools/peer, not through runfile symlinks.
peer_tools="$(dirname "$(readlink -f "$runfiles/tools/peer/run_in_peer.sh")")"
[ -f "$peer_tools/dcp_peer.py" ] || die "missing $peer_tools/dcp_peer.py"

# The exchange directory must be absolute and physical: the peer sees it at
# the same path (DCP_PEER_SHARE).
exchange="$(mktemp -d "${TEST_TMPDIR:?}/interop.XXXXXX")" || die "mktemp failed"
exchange="$(cd "$exchange" && pwd -P)"
export DCP_PEER_SHARE="$exchange"
# Each PyTorch launch takes under 10 s here; a hung one is killed after this.
export DCP_PEER_TIMEOUT="${DCP_PEER_TIMEOUT:-120}"

pytorch() {  # pytorch save|load ARGS...
  "$peer_tools/run_in_peer.sh" python3 "$peer_tools/dcp_peer.py" "$@"
}

pytorch_train() {  # pytorch_train train|resume|reference|compare ARGS...
  "$peer_tools/run_in_peer.sh" python3 "$peer_tools/train_peer.py" "$@"
}

results=()
failures=0
serial=0
# step NAME COMMAND...: runs and records one step.
step() {
  local name="$1"; shift
  local start=$SECONDS rc=0
  echo "=== $name"
  "$@" || rc=$?
  local took=$((SECONDS - start))
  if [ "$rc" -eq 0 ]; then
    results+=("PASS $name (${took}s)")
  else
    results+=("FAIL $name (exit $rc, ${took}s)")
    failures=$((failures + 1))
  fi
  return "$rc"
}

# CASE SAVE_WORLD LOAD_WORLD
pytorch_to_dcp() {
  local case="$1" n="$2" m="$3" dir="$exchange/pt_${1}_${2}"
  step "PyTorch saves $case with $n ranks" \
      pytorch save --dir "$dir" --world-size "$n" --case "$case" || return 0
  step "dcp loads $case (PyTorch, $n ranks) with $m ranks" \
      "$interop" load --dir="$dir" --world_size="$m" --case="$case" || true
}

# CASE SAVE_WORLD LOAD_WORLD [dcp_interop save flags...]
dcp_to_pytorch() {
  local case="$1" n="$2" m="$3"
  shift 3
  serial=$((serial + 1))
  local dir="$exchange/dcp_${case}_${n}_$serial"
  step "dcp saves $case with $n ranks $*" \
      "$interop" save --dir="$dir" --world_size="$n" --case="$case" "$@" || return 0
  if [ "$case" = large ]; then
    # So that the load below proves PyTorch ignores them.
    step "dcp wrote block checksum files for $case" compgen -G "$dir/*.dcpcrc" || true
  fi
  step "PyTorch loads $case (dcp, $n ranks) with $m ranks" \
      pytorch load --dir "$dir" --world-size "$m" --case "$case" || true
}

# Each side resumes the other's checkpoint of a real training run
# (checkpoint/module_state.h against get_state_dict/set_state_dict).
train_resume() {
  local x="$exchange"
  step "PyTorch: 4 uninterrupted steps" \
      pytorch_train reference --steps 4 --out "$x/pt_ref.json" || return 0
  step "dcp: 4 uninterrupted steps" \
      "$train" reference --steps=4 --out="$x/dcp_ref.json" || return 0
  step "dcp's uninterrupted step 4 matches PyTorch's" \
      pytorch_train compare "$x/dcp_ref.json" "$x/pt_ref.json" || true

  step "PyTorch trains 3 steps and saves with 2 ranks" \
      pytorch_train train --dir "$x/pt_ckpt" --world-size 2 --steps 3 \
      --out "$x/pt_train.json" || return 0
  local m
  for m in 1 3; do
    step "dcp resumes PyTorch's checkpoint with $m ranks for step 4" \
        "$train" resume --dir="$x/pt_ckpt" --world_size="$m" --steps=1 \
        --out="$x/dcp_resume_$m.json" || continue
    step "  its step 4 matches PyTorch's uninterrupted step 4" \
        pytorch_train compare "$x/dcp_resume_$m.json" "$x/pt_ref.json" || true
  done

  step "dcp trains 3 steps and saves with 2 ranks" \
      "$train" train --dir="$x/dcp_ckpt" --world_size=2 --steps=3 \
      --out="$x/dcp_train.json" || return 0
  for m in 1 3; do
    step "PyTorch resumes dcp's checkpoint with $m ranks for step 4" \
        pytorch_train resume --dir "$x/dcp_ckpt" --world-size "$m" --steps 1 \
        --out "$x/pt_resume_$m.json" || continue
    step "  its step 4 matches dcp's uninterrupted step 4" \
        pytorch_train compare "$x/pt_resume_$m.json" "$x/dcp_ref.json" || true
    step "  and PyTorch's uninterrupted step 4" \
        pytorch_train compare "$x/pt_resume_$m.json" "$x/pt_ref.json" || true
  done
}

case "$MODE" in
  pytorch_to_dcp)
    pytorch_to_dcp dtensor_row 4 3
    pytorch_to_dcp dtensor_col 3 2
    pytorch_to_dcp mesh2d 4 3
    pytorch_to_dcp mesh2d 2 4
    pytorch_to_dcp replicated 2 3
    pytorch_to_dcp mixed 1 4
    pytorch_to_dcp mixed 4 2
    # Records over 1 MiB, without block checksum files: dcp verifies them
    # whole.
    pytorch_to_dcp large 2 3
    ;;
  dcp_to_pytorch)
    dcp_to_pytorch dtensor_row 3 4
    dcp_to_pytorch dtensor_col 4 3
    dcp_to_pytorch mesh2d 4 2
    dcp_to_pytorch mesh2d 2 4
    dcp_to_pytorch replicated 1 2
    dcp_to_pytorch mixed 2 4
    dcp_to_pytorch mixed 4 1
    # Several files per rank, and one file per item.
    dcp_to_pytorch mixed 3 2 --thread_count=2
    dcp_to_pytorch dtensor_col 2 3 --nosingle_file_per_rank
    # Records over 1 MiB: the checkpoint has block checksum files, which
    # PyTorch ignores.
    dcp_to_pytorch large 2 3
    ;;
  train_resume)
    train_resume
    ;;
  *) die "unknown mode '$MODE'" ;;
esac

echo
echo "interop_test $MODE: ${#results[@]} steps, $failures failed, ${SECONDS}s"
printf '  %s\n' "${results[@]}"
[ "$failures" -eq 0 ]
