#!/usr/bin/env bash
# Installs what is missing, then runs every dcp test:
#   1. every test (`//...`) under AddressSanitizer, LeakSanitizer and
#      UndefinedBehaviorSanitizer (--config=asan_ubsan: one build for both);
#   2. every test tagged "threaded" (simulator, fake process group, futures
#      and executors, async save, threaded filesystem storage, c10d/Gloo,
#      multi-process helpers) under ThreadSanitizer (--config=tsan), picked
#      by tag, so new threaded tests join without editing this script;
#   3. the interop tests against real PyTorch 2.6, in a Debian 13 root that
#      tools/peer/provision_pytorch_peer.sh creates (or reuses) first, with
#      the dcp side under ThreadSanitizer (it runs simulated ranks), and the
#      side-by-side benchmark's smoke run at tiny sizes (both sides);
#   4. the example consumer workspace (examples/consumer), which depends on
#      dcp the way another Bazel project would, with its own upstream-layout
#      @com_google_absl (plain build).
# Before the tests, a query checks that every test depending on a library
# tagged "threaded" carries the tag itself.
#
# There is no plain (unsanitized) run of `//...`: stage 1 builds and runs
# the same tests with the same code, at -O1 with the sanitizers' checks on
# top, and stage 4 builds dcp without sanitizers. See README.md, "Testing".
#
# Usage: bash tools/test_all.sh [extra bazel flags, e.g. --config=ci]
# Ends with one line `tests: N passed, N failed` (Bazel test targets of all
# stages; a target run in two stages counts twice) and exits non-zero if
# anything failed or did not build. Prints each stage's wall time.
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
  local start=$SECONDS
  echo "test_all: (cd ${dir#$root/}; bazel test $*)"
  (cd "$dir" && bazel test --build_event_json_file="$events" "$@") || overall=1
  echo "test_all: took $((SECONDS - start)) s: bazel test $*"
}

# Tests that depend on a library tagged "threaded" but lack the tag would
# silently miss the ThreadSanitizer stage.
untagged="$(bazel query --noshow_progress \
    'kind(".*_test", rdeps(//..., attr(tags, "\bthreaded\b", //...)))
     except attr(tags, "\bthreaded\b", //...)' 2>/dev/null)" || {
  echo "test_all: bazel query for threaded tests failed"
  overall=1
}
if [ -n "$untagged" ]; then
  echo "test_all: these tests depend on threaded code but lack tags = [\"threaded\"]:"
  echo "$untagged" | sed 's/^/  /'
  overall=1
fi

# Library packages depend only on the layers below them (BUILD.bazel).
bash tools/check_layers.sh || overall=1

run_bazel_tests "$root" "$events_dir/asan_ubsan.json" --config=asan_ubsan "$@" -- //...
# --build_tests_only: build the threaded tests and what they depend on, not
# every target of //... a second time.
run_bazel_tests "$root" "$events_dir/tsan.json" --config=tsan \
  --test_tag_filters=threaded --build_tests_only "$@" -- //...
if [ "$peer_ready" -eq 1 ]; then
  # Tagged manual (they need root and the peer), so named explicitly.
  run_bazel_tests "$root" "$events_dir/interop.json" --config=tsan "$@" -- \
    //tools/interop:pytorch_to_dcp_test //tools/interop:dcp_to_pytorch_test \
    //tools/interop:train_resume_test \
    //tools/peer:bench_side_by_side_peer_test
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
