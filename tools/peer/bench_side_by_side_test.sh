#!/usr/bin/env bash
# Smoke test of bench_side_by_side.sh at --tiny sizes (never checks a
# timing, only that every figure is there and parsed):
#
#   bench_side_by_side_test.sh DCP dcp_only   the dcp side with the real
#       `dcp` binary (real processes under `dcp launch`) and fake
#       planner_benchmark / state_dict_benchmark binaries, whose printed
#       figures must reach the table; a planner_benchmark without the w4
#       mode gives "n/a"; a failing run and bad usage give non-zero exits
#   bench_side_by_side_test.sh DCP with_peer  both sides, PyTorch 2.6 in the
#       peer (root and tools/peer/provision_pytorch_peer.sh needed; tag
#       "interop")
set -uo pipefail

die() { echo "FAIL: $*"; exit 1; }
[ "$#" -eq 2 ] || die "usage: bench_side_by_side_test.sh DCP dcp_only|with_peer"
dcp="$(readlink -f "$1")"
mode="$2"
runfiles="${TEST_SRCDIR:?not run by bazel test}/${TEST_WORKSPACE:-dcp}"
script="$runfiles/tools/peer/bench_side_by_side.sh"
[ -f "$script" ] || die "missing $script"
tmp="$(cd "${TEST_TMPDIR:?}" && pwd -P)"
# Bazel's test PATH has no sbin, where chroot, mount and unshare live.
export PATH="$PATH:/usr/sbin:/sbin"

# A --bin-dir with the real dcp and fake benchmarks.
bin="$tmp/bin"
mkdir -p "$bin/tools" "$bin/planner" "$bin/checkpoint"
ln -s "$dcp" "$bin/tools/dcp"
cat > "$bin/planner/planner_benchmark" <<'EOF'
#!/bin/sh
[ "$1" = w4 ] || { echo "usage: planner_benchmark [keys...]" >&2; exit 2; }
echo "w4 save_ranks=$2 load_ranks=$3 tensors=$4"
echo "w4_save_plan_seconds 0.5"
echo "w4_load_plan_seconds 0.25"
EOF
cat > "$bin/checkpoint/state_dict_benchmark" <<'EOF'
#!/bin/sh
echo "case              keys   seconds       keys/s"
echo "set             $1    0.0100       100000"
echo "find            $1    0.0200       50000"
EOF
chmod +x "$bin/planner/planner_benchmark" "$bin/checkpoint/state_dict_benchmark"

out="$tmp/out"
# The cells of the table row whose first cell starts with PREFIX.
cells() { awk -F' [|] ' -v p="| $1" 'index($0, p) == 1 { print; exit }' "$out"; }
expect_row() {  # PREFIX REGEX
  local line; line="$(cells "$1")"
  [ -n "$line" ] || { cat "$out"; die "no table row \"$1\""; }
  echo "$line" | grep -Eq -- "$2" || { cat "$out"; die "row \"$1\" does not match $2: $line"; }
}
number=' [0-9]+[.][0-9]+ s'

if [ "$mode" = dcp_only ]; then
  bash "$script" --tiny --repeat 2 --dcp-only --bin-dir "$bin" --dir "$tmp" > "$out" \
      || { cat "$out"; die "the dcp-only run failed"; }
  expect_row "workload" "PyTorch 2.6 \| dcp \| ratio \| goal \| met\?"
  # PyTorch skipped; dcp figures with min-max of the 2 runs.
  expect_row "W1 save" "\| skipped \|$number, [0-9.]+ [GM]B/s \([0-9.]+–[0-9.]+\) \|"
  expect_row "↳ dd if=/dev/zero" "$number"
  expect_row "↳ memcpy, same bytes" "$number"
  expect_row "W1 resharded load" "\| skipped \|$number"
  expect_row "W1 load peak RSS" "\| skipped \| [0-9]+ MB \([0-9]+–[0-9]+\) \(process baseline [0-9]+ MB"
  expect_row "W2 save" "\| skipped \|$number"
  expect_row "W2 load" "\| skipped \|$number"
  expect_row "W3 async save" "\|$number \([0-9.]+–[0-9.]+\) \| — \| ≤ 1.5× memcpy \| (yes|no) \|"
  expect_row "↳ memcpy of each rank" "$number"
  expect_row "↳ the first call" "\| skipped \|$number"
  expect_row "↳ until the second save is complete" "$number"
  # The fake planner_benchmark's w4 lines and state_dict_benchmark's rows.
  expect_row "W4 save planning, 8 ranks × 4 tensors" \
      "\| skipped \| 0[.]500 s \(0[.]500–0[.]500\) \| — \|"
  expect_row "W4 load planning, 4 ranks" "\| skipped \| 0[.]250 s \(0[.]250–0[.]250\) \| — \|"
  expect_row "W5 build + look up 1000 keys" \
      "\| skipped \| 0[.]0300 s \(0[.]0300–0[.]0300\) \| — \| dcp < 0.1 s \| yes \|"
  grep -q "^- scratch: $tmp/dcp-bench[.]" "$out" || { cat "$out"; die "no scratch line"; }
  ls -d "$tmp"/dcp-bench.* 2>/dev/null && die "the scratch directory was left behind"

  # Without the w4 mode, W4's dcp side is n/a and the run still succeeds.
  printf '#!/bin/sh\necho "usage: planner_benchmark [keys...]" >&2\nexit 2\n' \
      > "$bin/planner/planner_benchmark"
  bash "$script" --tiny --repeat 1 --dcp-only --workloads w4 --bin-dir "$bin" --dir "$tmp" \
      > "$out" 2> "$tmp/err" || { cat "$out" "$tmp/err"; die "the W4-only run failed"; }
  expect_row "W4 save planning" "\| skipped \| n/a \| — \| — \|  \|"
  expect_row "↳ PyTorch: the ranks'" "\| skipped \| n/a \| — \| ≥ 10× PyTorch \| n/a \|"
  expect_row "W4 load planning" "\| skipped \| n/a \|"
  grep -q "no w4 mode" "$tmp/err" || die "no note that W4 is n/a"
  [ -z "$(cells "W1 save")" ] || die "W1 ran although only W4 was asked for"

  # A failing run fails the command, and says so.
  printf '#!/bin/sh\necho "broken dcp" >&2\nexit 3\n' > "$tmp/broken_dcp"
  chmod +x "$tmp/broken_dcp"
  rm "$bin/tools/dcp"
  ln -s "$tmp/broken_dcp" "$bin/tools/dcp"
  if bash "$script" --tiny --repeat 1 --dcp-only --workloads W2 --bin-dir "$bin" \
      --dir "$tmp" > "$out" 2> "$tmp/err"; then
    die "a failing dcp run did not fail the command"
  fi
  grep -q "run(s) failed" "$out" || { cat "$out"; die "no failure line"; }
  grep -q "broken dcp" "$tmp/err" || { cat "$tmp/err"; die "the failed run's output is not shown"; }

  # Usage errors.
  for bad in "--workloads W9" "--repeat 0" "--frobnicate"; do
    # shellcheck disable=SC2086
    bash "$script" $bad --dcp-only --bin-dir "$bin" > /dev/null 2>&1
    [ "$?" -eq 2 ] || die "\"$bad\" did not exit with 2"
  done
elif [ "$mode" = with_peer ]; then
  [ "$(id -u)" -eq 0 ] || die "must run as root (the PyTorch peer)"
  bash "$script" --tiny --repeat 1 --bin-dir "$bin" --dir "$tmp" > "$out" \
      || { cat "$out"; die "the run with the peer failed"; }
  cat "$out"
  for row in "W1 save" "W1 resharded load" "W2 save" "W2 load" "W3 async save" \
      "↳ the first call" "↳ until the second save is complete" \
      "W4 save planning" "↳ PyTorch: the ranks'" "W4 load planning" \
      "W5 build"; do
    expect_row "$row" "^\| [^|]* \|$number[^|]* \|$number[^|]* \| [0-9.]+× \|"
  done
  expect_row "W1 load peak RSS" "\| [0-9]+ MB \| [0-9]+ MB"
else
  die "unknown mode $mode"
fi
echo PASS
