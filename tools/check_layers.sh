#!/usr/bin/env bash
# Checks that dcp's library packages depend only on the layers below them:
#
#   layer 0  //core         nothing of dcp
#   layer 1  //distributed  //core
#            //planner      //core
#   layer 2  //storage      //core, //planner
#   layer 3  //checkpoint   //core, //distributed, //planner, //storage
#   layer 4  //tools, //examples: anything
#
# Only non-testonly libraries count: tests and //testing (testonly) may use
# any package. Prints each offending edge and exits 1 if there is one.
# Usage: bash tools/check_layers.sh [bazel query flags]
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

declare -A allowed=(
  [core]=""
  [distributed]="//core:*"
  [planner]="//core:*"
  [storage]="//core:* + //planner:*"
  [checkpoint]="//core:* + //distributed:* + //planner:* + //storage:*"
)
status=0
for pkg in core distributed planner storage checkpoint; do
  libs="attr(testonly, 0, kind(cc_library, //${pkg}:*))"
  below="//${pkg}:*"
  [ -n "${allowed[$pkg]}" ] && below="${below} + ${allowed[$pkg]}"
  # Direct dependencies of the package's libraries inside dcp that lie
  # outside the package and the layers below it.
  bad="$(bazel query --noshow_progress "$@" \
      "kind('cc_library', deps(${libs}, 1)) intersect //... except (${below})" \
      2>/dev/null)" || { echo "check_layers: bazel query failed for //${pkg}"; exit 1; }
  if [ -n "$bad" ]; then
    echo "check_layers: //${pkg} libraries depend on higher layers:"
    for target in $bad; do
      users="$(bazel query --noshow_progress "$@" \
          "${libs} intersect rdeps(${libs}, ${target}, 1)" 2>/dev/null | tr '\n' ' ')"
      echo "  ${target} (used by ${users})"
    done
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "check_layers: every library package depends only on lower layers"
exit "$status"
