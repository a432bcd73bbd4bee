#!/usr/bin/env bash
# Installs what is missing, then runs every dcp test:
#   1. `bazel test //...` (unit, simulator, filesystem and multi-process tests);
#   2. the threaded simulator and protocol tests again under ThreadSanitizer;
#   3. the interop tests against real PyTorch 2.6, in a Debian 13 root that
#      tools/peer/provision_pytorch_peer.sh creates (or reuses) first;
#   4. the example consumer workspace (examples/consumer), which depends on
#      dcp the way another Bazel project would.
#
# Usage: bash tools/test_all.sh [extra bazel flags, e.g. --config=ci]
# Ends with one line `tests: N passed, N failed` (Bazel test targets) and
# exits non-zero if anything failed or did not build.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash tools/install_deps.sh || { echo "test_all: installing dependencies failed"; exit 1; }
peer_ready=1
bash tools/peer/provision_pytorch_peer.sh || {
  echo "test_all: provisioning the PyTorch 2.6 peer failed; the interop tests will fail"
  peer_ready=0
}

events_dir="$(mktemp -d)"
trap 'rm -rf "$events_dir"' EXIT

overall=0
run_bazel_tests() {
  # $1: workspace dir, $2: event file; the rest: bazel test arguments.
  local dir="$1" events="$2"
  shift 2
  echo "test_all: (cd ${dir#$root/}; bazel test $*)"
  (cd "$dir" && bazel test --build_event_json_file="$events" "$@") || overall=1
}

run_bazel_tests "$root" "$events_dir/main.json" "$@" -- //...
run_bazel_tests "$root" "$events_dir/tsan.json" --config=tsan "$@" -- \
  //testing:simulator_test //testing:fake_process_group_test \
  //checkpoint:checkpointer_multirank_test //checkpoint:future_test \
  //checkpoint:executor_test
if [ "$peer_ready" -eq 1 ]; then
  # Tagged manual (they need root and the peer), so named explicitly.
  run_bazel_tests "$root" "$events_dir/interop.json" "$@" -- \
    //tools/interop:pytorch_to_dcp_test //tools/interop:dcp_to_pytorch_test
else
  overall=1
fi
run_bazel_tests "$root/examples/consumer" "$events_dir/consumer.json" "$@" -- //...

# One testSummary event per test target run; only those carry overallStatus
# (other events merely announce their ids).
summaries() { cat "$events_dir"/*.json 2>/dev/null | grep -o '"overallStatus":"[A-Z_]*"'; }
passed=$(summaries | grep -c '"PASSED"')
failed=$(summaries | grep -vc '"PASSED"')
if [ "$overall" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "test_all: bazel failed before running every test (see the errors above)"
fi
echo "tests: ${passed} passed, ${failed} failed"
exit "$overall"
