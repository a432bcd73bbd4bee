#!/bin/sh
# `dcp launch --nproc=2 -- dcp demo --distributed`: two real processes over
# Gloo save, load resharded and verify; then a failing launch exits non-zero.
set -eu
dcp="$1"
dir="${TEST_TMPDIR:-/tmp}/launch_demo"
out="${TEST_TMPDIR:-/tmp}/launch_demo.out"
"$dcp" launch --nproc=2 -- "$dcp" demo --distributed --dir="$dir" \
    --vocab=300 --hidden=24 --fsync=false > "$out" 2>&1 || {
  cat "$out"; echo "FAIL: dcp launch of the distributed demo failed"; exit 1; }
grep -q "on 2 ranks: OK" "$out" || {
  cat "$out"; echo "FAIL: no verification line"; exit 1; }
test -f "$dir/.metadata" || { echo "FAIL: no .metadata"; exit 1; }
if "$dcp" launch --nproc=2 -- /bin/sh -c 'exit $RANK' > "$out" 2>&1; then
  cat "$out"; echo "FAIL: a failing rank did not fail the launch"; exit 1
fi
grep -q "rank 1 (pid [0-9]*) exited with code 1" "$out" || {
  cat "$out"; echo "FAIL: the failed rank is not named"; exit 1; }
echo PASS
