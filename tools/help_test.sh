#!/bin/sh
# `dcp --help` lists dcp's own flags and commands, not libtorch's or glog's;
# `dcp --helpfull` lists every flag.
set -eu
dcp="$1"
out="${TEST_TMPDIR:-/tmp}/help.out"
"$dcp" --help > "$out" 2>&1 || true
grep -q "to-torch-save DIR FILE" "$out" || {
  cat "$out"; echo "FAIL: --help does not describe the commands"; exit 1; }
grep -q -- "-world_size" "$out" || {
  cat "$out"; echo "FAIL: --help does not list dcp's --world_size"; exit 1; }
if grep -q -- "-minloglevel" "$out"; then
  cat "$out"; echo "FAIL: --help lists glog's --minloglevel"; exit 1
fi
"$dcp" --helpfull > "$out" 2>&1 || true
grep -q -- "-minloglevel" "$out" || {
  cat "$out"; echo "FAIL: --helpfull does not list glog's flags"; exit 1; }
echo PASS
