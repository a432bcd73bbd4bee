#!/usr/bin/env bash
# Side-by-side benchmark of dcp and PyTorch 2.6's torch.distributed.checkpoint
# (issue 10): the same workloads, the same bytes, the same file system, in one
# run, alternating PyTorch and dcp, each repeated; prints a Markdown table with
# both medians (min-max), their ratio and issue 10's goal.
#
#   bash tools/peer/bench_side_by_side.sh [--quick] [--repeat N]
#        [--workloads W1,W2,W3,W4,W5] [--dir DIR] [--w4-repeat N]
#        [--bin-dir DIR] [--dcp-only]
#
# Workloads (full size; --quick uses the sizes in brackets):
#   W1  save: 16 float32 tensors 4096x4096 (1 GiB) [16 x 512x512, 16 MiB],
#       row-sharded over 4 ranks, fsync on; resharded load with 3 ranks from
#       the page cache (dcp: CRC-32 verification on); plus `dd if=/dev/zero
#       conv=fsync` of the same bytes (one dd, bs = one tensor) and a memcpy
#       of the same bytes in one process; peak RSS of dcp's load ranks
#       (/usr/bin/time -v) against destination bytes per rank + 100 MB
#   W2  save: 20,000 tensors 32x32 float32 (80 MB) [2,000], each rank holding
#       a quarter of the tensors (whole tensors, round robin); load with 3
#       ranks (each a third)
#   W3  async save of W1: time until the second async_save / AsyncSave of
#       one writer (the steady state; the first sets up) returns; memcpy
#       of each rank's bytes into touched buffers, all 4 ranks at once
#   W4  planning only: save planning for 1,024 ranks x 200 tensors, load
#       planning for 512 ranks against that metadata [64 x 20, 32]
#   W5  a StateDict (dcp) / Python dict (PyTorch) of 100,000 keys [10,000]:
#       build, then look up every key
#
# PyTorch runs in the peer (tools/peer/run_in_peer.sh, dcp_peer_bench.py: one
# process per rank over Gloo); dcp runs as real processes under `dcp launch`
# (`dcp bench --distributed`, tools/dist_bench.h, over c10d/Gloo). Both use
# their FileSystemWriter/Reader with one I/O thread per rank. W4's dcp side
# is `planner_benchmark w4 S L T` (lines `w4_save_plan_seconds X`,
# `w4_load_plan_seconds Y`): "n/a" if the binary lacks that mode. W5's dcp
# side is `state_dict_benchmark N` (set + find rows).
#
# Options:
#   --quick         small sizes (a smoke run of a minute or two)
#   --tiny          tiny sizes, for tests (W1 4 x 64x64, W2 200 tensors,
#                   W4 8 x 4 ranks x 4 tensors, W5 1,000 keys)
#   --repeat N      runs of each side per workload (default 3); the table
#                   shows the median and min-max; sides alternate, and the
#                   side that goes first alternates between repetitions
#   --w4-repeat N   repetitions of W4 only (default: --repeat); PyTorch's W4
#                   takes minutes at full size
#   --workloads L   comma-separated subset of W1..W5 (default all)
#   --dir DIR       parent of the scratch directory (default /var/tmp); the
#                   scratch directory is removed at the end
#   --bin-dir DIR   use DIR/tools/dcp, DIR/planner/planner_benchmark and
#                   DIR/checkpoint/state_dict_benchmark instead of building
#                   them (`bazel build --config=opt`, i.e. -c opt)
#   --dcp-only      skip PyTorch (no root or peer needed)
#
# Needs root for the peer (provisioned or reused with
# provision_pytorch_peer.sh) unless --dcp-only. Exit status: 0 if every run
# succeeded (goals missed are not failures), 1 if a run failed, 2 for usage.
set -uo pipefail

# The real tools/peer (not a runfiles symlink): run_in_peer.sh binds its own
# directory into the peer.
peer_dir="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
root="$(cd "$peer_dir/../.." && pwd)"
command_line="$0 $*"

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die_usage() { echo "bench_side_by_side: $*" >&2; exit 2; }

repeat=3
w4_repeat=""
quick=0
tiny=0
workloads="W1,W2,W3,W4,W5"
scratch_parent="/var/tmp"
bin_dir=""
dcp_only=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --tiny) tiny=1 ;;
    --repeat) shift; repeat="${1:-}" ;;
    --repeat=*) repeat="${1#*=}" ;;
    --w4-repeat) shift; w4_repeat="${1:-}" ;;
    --w4-repeat=*) w4_repeat="${1#*=}" ;;
    --workloads) shift; workloads="${1:-}" ;;
    --workloads=*) workloads="${1#*=}" ;;
    --dir) shift; scratch_parent="${1:-}" ;;
    --dir=*) scratch_parent="${1#*=}" ;;
    --bin-dir) shift; bin_dir="${1:-}" ;;
    --bin-dir=*) bin_dir="${1#*=}" ;;
    --dcp-only) dcp_only=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die_usage "unknown argument \"$1\" (see --help)" ;;
  esac
  shift
done
[[ "$repeat" =~ ^[1-9][0-9]*$ ]] || die_usage "--repeat needs a positive integer"
[ -n "$w4_repeat" ] || w4_repeat="$repeat"
[[ "$w4_repeat" =~ ^[1-9][0-9]*$ ]] || die_usage "--w4-repeat needs a positive integer"
workloads="$(echo "$workloads" | tr 'a-z' 'A-Z')"
for w in ${workloads//,/ }; do
  case "$w" in W1|W2|W3|W4|W5) ;; *) die_usage "unknown workload \"$w\"" ;; esac
done
has() { [[ ",$workloads," == *",$1,"* ]]; }
[ -d "$scratch_parent" ] || die_usage "--dir $scratch_parent is not a directory"
# Physical: the peer sees it at the same path.
scratch_parent="$(cd "$scratch_parent" && pwd -P)"
if [ "$dcp_only" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  die_usage "the PyTorch side needs root (the peer); use --dcp-only without it"
fi

# Sizes.
if [ "$tiny" -eq 1 ]; then
  w1_tensors=4; w1_rows=64; w1_cols=64
  w2_tensors=200
  w4_save_ranks=8; w4_load_ranks=4; w4_tensors=4
  w5_keys=1000
elif [ "$quick" -eq 1 ]; then
  w1_tensors=16; w1_rows=512; w1_cols=512
  w2_tensors=2000
  w4_save_ranks=64; w4_load_ranks=32; w4_tensors=20
  w5_keys=10000
else
  w1_tensors=16; w1_rows=4096; w1_cols=4096
  w2_tensors=20000
  w4_save_ranks=1024; w4_load_ranks=512; w4_tensors=200
  w5_keys=100000
fi
w2_rows=32; w2_cols=32
w1_bytes=$((w1_tensors * w1_rows * w1_cols * 4))
w2_bytes=$((w2_tensors * w2_rows * w2_cols * 4))
# Destination bytes of the largest W1 load rank (3 ranks, torch.chunk rows).
w1_dest_bytes=$(( (w1_rows + 2) / 3 * w1_cols * 4 * w1_tensors ))

log() { echo "bench: $*" >&2; }

# Binaries.
if [ -z "$bin_dir" ]; then
  log "building //tools:dcp //planner:planner_benchmark //core:state_dict_benchmark (-c opt)"
  (cd "$root" && bazel build --config=opt //tools:dcp //planner:planner_benchmark \
      //core:state_dict_benchmark) >&2 || { log "bazel build failed"; exit 1; }
  bin_dir="$(cd "$root" && bazel info --config=opt bazel-bin 2>/dev/null)" \
      || { log "bazel info failed"; exit 1; }
fi
dcp="$bin_dir/tools/dcp"
planner_benchmark="$bin_dir/planner/planner_benchmark"
state_dict_benchmark="$bin_dir/checkpoint/state_dict_benchmark"
[ -x "$dcp" ] || { log "no dcp binary at $dcp"; exit 1; }

if [ "$dcp_only" -eq 0 ]; then
  log "provisioning (or reusing) the PyTorch 2.6 peer"
  bash "$peer_dir/provision_pytorch_peer.sh" > /dev/null 2>&1 || {
    log "provisioning the peer failed; run tools/peer/provision_pytorch_peer.sh to see why"
    exit 1; }
fi

scratch="$(mktemp -d "$scratch_parent/dcp-bench.XXXXXX")" || exit 1
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/logs"
results="$scratch/results"
: > "$results"
failures=0
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

record() { echo "$1 $2" >> "$results"; }

# The value of field KEY= in the aggregate line "PREFIX workload=..." of LOG.
agg_field() {
  awk -v prefix="$2" -v key="$3" '{
      for (i = 1; i < NF; i++) if ($i == prefix && $(i + 1) ~ /^workload=/) {
        for (j = i + 1; j <= NF; j++) if (index($j, key "=") == 1) {
          print substr($j, length(key) + 2); exit
        }
      }
    }' "$1"
}
# The number after "NAME " on a line of LOG ("w4_save_plan_seconds 1.23").
named_value() { awk -v name="$2" '$1 == name && $2 ~ /^[0-9.eE+-]+$/ { print $2; exit }' "$1"; }

run_failed() {  # LOG WHAT
  failures=$((failures + 1))
  log "FAILED: $2; its output:"
  tail -n 40 "$1" | sed 's/^/    /' >&2
}

# pt NAME ARGS...: dcp_peer_bench.py in the peer; output in logs/NAME.
pt() {
  local name="$1"; shift
  DCP_PEER_SHARE="$scratch" "$peer_dir/run_in_peer.sh" \
      python3 "$peer_dir/dcp_peer_bench.py" "$@" > "$scratch/logs/$name" 2>&1
}
# dcp_ranks NAME NPROC ARGS...: `dcp launch` of `dcp bench --distributed`.
dcp_ranks() {
  local name="$1" nproc="$2"; shift 2
  "$dcp" launch --nproc="$nproc" -- "$dcp" bench --distributed "$@" \
      > "$scratch/logs/$name" 2>&1
}

# One PyTorch save or load, recorded as KEY (and optional extra fields).
pt_case() {  # KEY NAME ARGS...
  local key="$1" name="$2"; shift 2
  log "$name (PyTorch 2.6)"
  if pt "$name" "$@"; then
    local s; s="$(agg_field "$scratch/logs/$name" peer_bench seconds)"
    if [ -n "$s" ]; then record "$key.pt" "$s"; return 0; fi
  fi
  run_failed "$scratch/logs/$name" "$name (PyTorch)"
  return 1
}
dcp_case() {  # KEY NAME NPROC ARGS...
  local key="$1" name="$2" nproc="$3"; shift 3
  log "$name (dcp)"
  if dcp_ranks "$name" "$nproc" "$@"; then
    local s; s="$(agg_field "$scratch/logs/$name" dcp_bench seconds)"
    if [ -n "$s" ]; then record "$key.dcp" "$s"; return 0; fi
  fi
  run_failed "$scratch/logs/$name" "$name (dcp)"
  return 1
}

# Runs "pt" and "dcp" steps in the order of repetition REP (odd: PyTorch
# first) by calling FUNCTION pt|dcp.
alternate() {  # REP FUNCTION
  local sides="pt dcp"
  [ $(($1 % 2)) -eq 0 ] && sides="dcp pt"
  for side in $sides; do
    if [ "$side" = pt ] && [ "$dcp_only" -eq 1 ]; then continue; fi
    "$2" "$side" "$1"
  done
}

w1_tensor_args=(--tensors "$w1_tensors" --rows "$w1_rows" --cols "$w1_cols" --layout row)
w1_dcp_args=(--tensors="$w1_tensors" --rows="$w1_rows" --cols="$w1_cols" --layout=row)
w2_tensor_args=(--tensors "$w2_tensors" --rows "$w2_rows" --cols "$w2_cols" --layout round_robin)
w2_dcp_args=(--tensors="$w2_tensors" --rows="$w2_rows" --cols="$w2_cols" --layout=round_robin)

w1_save() {  # SIDE REP
  if [ "$1" = pt ]; then
    pt_case W1_save "w1_save_pt_$2" save --dir "$scratch/w1_pt" --world-size 4 \
        "${w1_tensor_args[@]}" > /dev/null
  else
    dcp_case W1_save "w1_save_dcp_$2" 4 --workload=save --dir="$scratch/w1_dcp" \
        "${w1_dcp_args[@]}"
  fi
}
w1_load() {  # SIDE REP
  if [ "$1" = pt ]; then
    if pt_case W1_load "w1_load_pt_$2" load --dir "$scratch/w1_pt" --world-size 3 \
        "${w1_tensor_args[@]}" > /dev/null; then
      record W1_rss.pt "$(agg_field "$scratch/logs/w1_load_pt_$2" peer_bench max_rss_kb)"
    fi
  else
    # Each rank under /usr/bin/time -v, its report in time.<rank>.
    local name="w1_load_dcp_$2"
    log "$name (dcp)"
    if "$dcp" launch --nproc=3 -- sh -c 'exec /usr/bin/time -v -o "$0.$RANK" "$@"' \
        "$scratch/time" "$dcp" bench --distributed --workload=load \
        --dir="$scratch/w1_dcp" "${w1_dcp_args[@]}" > "$scratch/logs/$name" 2>&1; then
      record W1_load.dcp "$(agg_field "$scratch/logs/$name" dcp_bench seconds)"
      local rss
      rss="$(cat "$scratch"/time.* | awk -F: '/Maximum resident set size/ {
          v = $2 + 0; if (v > m) m = v } END { print m + 0 }')"
      record W1_rss.dcp "$rss"
      record W1_base_rss.dcp "$(agg_field "$scratch/logs/$name" dcp_bench start_rss_kb)"
    else
      run_failed "$scratch/logs/$name" "$name (dcp)"
    fi
    rm -f "$scratch"/time.*
  fi
}
run_w1() {
  local rep
  for rep in $(seq 1 "$repeat"); do
    alternate "$rep" w1_save
    log "w1_dd_$rep (dd conv=fsync)"
    if dd if=/dev/zero of="$scratch/dd.bin" bs=$((w1_rows * w1_cols * 4)) \
        count="$w1_tensors" conv=fsync > "$scratch/logs/w1_dd_$rep" 2>&1; then
      record W1_dd "$(sed -n 's/.* copied, \([0-9.e+-]*\) s.*/\1/p' "$scratch/logs/w1_dd_$rep")"
    else
      run_failed "$scratch/logs/w1_dd_$rep" "dd"
    fi
    rm -f "$scratch/dd.bin"
    alternate "$rep" w1_load
    if dcp_ranks "w1_memcpy_$rep" 1 --workload=memcpy "${w1_dcp_args[@]}"; then
      record W1_memcpy "$(agg_field "$scratch/logs/w1_memcpy_$rep" dcp_bench seconds)"
    else
      run_failed "$scratch/logs/w1_memcpy_$rep" "memcpy"
    fi
    rm -rf "$scratch/w1_pt" "$scratch/w1_dcp"
  done
}

w2_save() {
  if [ "$1" = pt ]; then
    pt_case W2_save "w2_save_pt_$2" save --dir "$scratch/w2_pt" --world-size 4 \
        "${w2_tensor_args[@]}" > /dev/null
  else
    dcp_case W2_save "w2_save_dcp_$2" 4 --workload=save --dir="$scratch/w2_dcp" \
        "${w2_dcp_args[@]}"
  fi
}
w2_load() {
  if [ "$1" = pt ]; then
    pt_case W2_load "w2_load_pt_$2" load --dir "$scratch/w2_pt" --world-size 3 \
        "${w2_tensor_args[@]}" > /dev/null
  else
    dcp_case W2_load "w2_load_dcp_$2" 3 --workload=load --dir="$scratch/w2_dcp" \
        "${w2_dcp_args[@]}"
  fi
}
run_w2() {
  local rep
  for rep in $(seq 1 "$repeat"); do
    alternate "$rep" w2_save
    alternate "$rep" w2_load
    rm -rf "$scratch/w2_pt" "$scratch/w2_dcp"
  done
}

w3_async() {
  if [ "$1" = pt ]; then
    if pt_case W3_return "w3_async_pt_$2" save --async --dir "$scratch/w3_pt" \
        --world-size 4 "${w1_tensor_args[@]}" > /dev/null; then
      record W3_complete.pt "$(agg_field "$scratch/logs/w3_async_pt_$2" peer_bench complete_seconds)"
      record W3_first.pt "$(agg_field "$scratch/logs/w3_async_pt_$2" peer_bench first_return_seconds)"
    fi
    rm -rf "$scratch/w3_pt"
  else
    if dcp_case W3_return "w3_async_dcp_$2" 4 --workload=async_save \
        --dir="$scratch/w3_dcp" "${w1_dcp_args[@]}"; then
      record W3_complete.dcp "$(agg_field "$scratch/logs/w3_async_dcp_$2" dcp_bench complete_seconds)"
      record W3_first.dcp "$(agg_field "$scratch/logs/w3_async_dcp_$2" dcp_bench first_return_seconds)"
      record W3_memcpy "$(agg_field "$scratch/logs/w3_async_dcp_$2" dcp_bench memcpy_seconds)"
    fi
    rm -rf "$scratch/w3_dcp"
  fi
}
run_w3() {
  local rep
  for rep in $(seq 1 "$repeat"); do alternate "$rep" w3_async; done
}

w4_plan() {
  local name="w4_plan_$1_$2" log_file
  log_file="$scratch/logs/$name"
  if [ "$1" = pt ]; then
    log "$name (PyTorch 2.6, one process)"
    if pt "$name" plan --save-ranks "$w4_save_ranks" --load-ranks "$w4_load_ranks" \
        --tensors "$w4_tensors"; then
      record W4_save.pt "$(named_value "$log_file" w4_save_plan_seconds)"
      record W4_save_local.pt "$(named_value "$log_file" w4_save_local_plan_seconds)"
      record W4_load.pt "$(named_value "$log_file" w4_load_plan_seconds)"
    else
      run_failed "$log_file" "$name (PyTorch)"
    fi
  else
    log "$name (dcp planner_benchmark w4)"
    if [ ! -x "$planner_benchmark" ]; then
      echo "no $planner_benchmark" > "$log_file"
      return
    fi
    # A binary without the w4 mode prints usage: W4 dcp is then n/a.
    "$planner_benchmark" w4 "$w4_save_ranks" "$w4_load_ranks" "$w4_tensors" \
        > "$log_file" 2>&1
    local s l
    s="$(named_value "$log_file" w4_save_plan_seconds)"
    l="$(named_value "$log_file" w4_load_plan_seconds)"
    [ -n "$s" ] && record W4_save.dcp "$s"
    [ -n "$l" ] && record W4_load.dcp "$l"
    if [ -z "$s" ] || [ -z "$l" ]; then
      log "planner_benchmark has no w4 mode (or printed no w4 lines): W4 dcp is n/a"
    fi
  fi
}
run_w4() {
  local rep
  for rep in $(seq 1 "$w4_repeat"); do alternate "$rep" w4_plan; done
}

w5_dict() {
  local name="w5_dict_$1_$2" log_file
  log_file="$scratch/logs/$name"
  if [ "$1" = pt ]; then
    log "$name (Python dict in the peer)"
    if pt "$name" dict --keys "$w5_keys"; then
      record W5.pt "$(awk '$1 == "w5_build_seconds" { b = $2 } $1 == "w5_lookup_seconds" { l = $2 }
          END { if (b != "" && l != "") printf "%.6f\n", b + l }' "$log_file")"
    else
      run_failed "$log_file" "$name (PyTorch)"
    fi
  else
    log "$name (dcp state_dict_benchmark)"
    [ -x "$state_dict_benchmark" ] || { echo "no $state_dict_benchmark" > "$log_file"; return; }
    # Rows "set N seconds keys/s" and "find N seconds keys/s" (best of 3).
    if "$state_dict_benchmark" "$w5_keys" > "$log_file" 2>&1; then
      record W5.dcp "$(awk '$1 == "set" { s = $3 } $1 == "find" { f = $3 }
          END { if (s != "" && f != "") printf "%.6f\n", s + f }' "$log_file")"
    else
      run_failed "$log_file" "$name (dcp)"
    fi
  fi
}
run_w5() {
  local rep
  for rep in $(seq 1 "$repeat"); do alternate "$rep" w5_dict; done
}

start_time=$SECONDS
has W1 && run_w1
has W2 && run_w2
has W3 && run_w3
has W4 && run_w4
has W5 && run_w5
elapsed=$((SECONDS - start_time))

# ---------------------------------------------------------------------------
# The table.
# ---------------------------------------------------------------------------

# "median min max count" of KEY's non-empty values, or "" if none.
stats() {
  awk -v key="$1" '$1 == key && $2 != "" { print $2 }' "$results" | sort -g | awk '
      { v[NR] = $1 }
      END {
        if (NR == 0) exit
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.9g %.9g %.9g %d\n", m, v[1], v[NR], NR
      }'
}
median() { stats "$1" | cut -d' ' -f1; }
# Seconds: "1.234 s (1.200-1.300)" [with GB/s for BYTES].
fmt_seconds() {  # KEY [BYTES]
  local st; st="$(stats "$1")"
  if [ -z "$st" ]; then
    if [[ "$1" == *.pt ]] && [ "$dcp_only" -eq 1 ]; then echo "skipped"; else echo "n/a"; fi
    return
  fi
  echo "$st" | awk -v bytes="${2:-0}" '{
      if ($1 >= 0.1) f = "%.3f"; else if ($1 >= 0.001) f = "%.4f"; else f = "%.6f"
      s = sprintf(f " s", $1)
      if (bytes > 0 && $1 > 0) {
        r = bytes / $1
        s = s ((r >= 1e8) ? sprintf(", %.2f GB/s", r / 1e9) : sprintf(", %.1f MB/s", r / 1e6))
      }
      if ($4 > 1) s = s sprintf(" (" f "–" f ")", $2, $3)
      print s
    }'
}
fmt_mb() {  # KEY (kB values)
  local st; st="$(stats "$1")"
  if [ -z "$st" ]; then
    if [[ "$1" == *.pt ]] && [ "$dcp_only" -eq 1 ]; then echo "skipped"; else echo "n/a"; fi
    return
  fi
  echo "$st" | awk '{ s = sprintf("%.0f MB", $1 * 1024 / 1e6)
      if ($4 > 1) s = s sprintf(" (%.0f–%.0f)", $2 * 1024 / 1e6, $3 * 1024 / 1e6)
      print s }'
}
# PyTorch / dcp of the medians, "12.3×".
ratio() {  # PT_KEY DCP_KEY
  local a b; a="$(median "$1")"; b="$(median "$2")"
  if [ -z "$a" ] || [ -z "$b" ]; then echo "—"; return; fi
  awk -v a="$a" -v b="$b" 'BEGIN {
      if (b <= 0) { print "—"; exit }
      r = a / b; printf((r >= 0.1) ? "%.2f×\n" : "%.2g×\n", r) }'
}
# "yes"/"no"/"n/a" for an awk condition over named medians.
met() {  # CONDITION NAME=KEY...
  local cond="$1"; shift
  local args=() kv v
  for kv in "$@"; do
    v="$(median "${kv#*=}")"
    [ -n "$v" ] || { echo "n/a"; return; }
    args+=(-v "${kv%%=*}=$v")
  done
  awk "${args[@]}" "BEGIN { print (($cond) ? \"yes\" : \"no\") }"
}
human_bytes() { awk -v b="$1" 'BEGIN {
    if (b >= 2^30) printf "%.2f GiB", b / 2^30; else printf "%.1f MiB", b / 2^20 }'; }

row() { echo "| $1 | $2 | $3 | $4 | $5 | $6 |"; }

echo
echo "## dcp vs PyTorch 2.6 (torch.distributed.checkpoint), side by side"
echo
echo "- command: \`$command_line\`"
echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)),"\
     "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM,"\
     "kernel $(uname -r)"
echo "- scratch: $scratch ($(df -PT "$scratch" | awk 'NR == 2 { print $2 " on " $1 }'))"
echo "- load average at start / end: $load_start / $(cut -d' ' -f1-3 /proc/loadavg); took ${elapsed} s"
echo "- $repeat run(s) of each side per workload (W4: $w4_repeat); median (min–max); ratio = PyTorch / dcp"
if [ "$quick" -eq 1 ] || [ "$tiny" -eq 1 ]; then
  echo "- **$([ "$tiny" -eq 1 ] && echo --tiny || echo --quick) sizes** (not the issue's): goals are shown for reference only"
fi
echo
row "workload" "PyTorch 2.6" "dcp" "ratio" "goal" "met?"
row "---" "---" "---" "---" "---" "---"
if has W1; then
  b="$(human_bytes "$w1_bytes")"
  row "W1 save, $w1_tensors × ${w1_rows}×${w1_cols} f32 ($b), 4 ranks row-sharded, fsync" \
      "$(fmt_seconds W1_save.pt "$w1_bytes")" "$(fmt_seconds W1_save.dcp "$w1_bytes")" \
      "$(ratio W1_save.pt W1_save.dcp)" "≥ 0.9× dd rate; ahead of PyTorch" \
      "$(met 'd <= dd / 0.9 && (p == "" || d < p)' d=W1_save.dcp dd=W1_dd \
          $([ "$dcp_only" -eq 0 ] && echo p=W1_save.pt))"
  row "↳ dd if=/dev/zero conv=fsync, same bytes (one dd, bs = one tensor)" "—" \
      "$(fmt_seconds W1_dd "$w1_bytes")" "—" "reference" ""
  row "↳ memcpy, same bytes, one process" "—" "$(fmt_seconds W1_memcpy "$w1_bytes")" "—" "reference" ""
  row "W1 resharded load, 3 ranks, page cache (dcp: CRC-32 verify on)" \
      "$(fmt_seconds W1_load.pt "$w1_bytes")" "$(fmt_seconds W1_load.dcp "$w1_bytes")" \
      "$(ratio W1_load.pt W1_load.dcp)" "≥ 4× PyTorch" \
      "$(met 'p / d >= 4' p=W1_load.pt d=W1_load.dcp)"
  dest_mb="$(awk -v b="$w1_dest_bytes" 'BEGIN { printf "%.0f", b / 1e6 }')"
  row "W1 load peak RSS per rank (dcp: /usr/bin/time -v; PyTorch: getrusage)" \
      "$(fmt_mb W1_rss.pt)" "$(fmt_mb W1_rss.dcp) (process baseline $(fmt_mb W1_base_rss.dcp))" \
      "$(ratio W1_rss.pt W1_rss.dcp)" "≤ dest $dest_mb MB + 100 MB" \
      "$(awk -v lim="$w1_dest_bytes" -v kb="$(stats W1_rss.dcp | cut -d' ' -f3)" \
          'BEGIN { if (kb == "") print "n/a"; else print (kb * 1024 <= lim + 100e6) ? "yes" : "no" }')"
fi
if has W2; then
  row "W2 save, $w2_tensors × 32×32 f32 ($(human_bytes "$w2_bytes")), 4 ranks, a quarter each, fsync" \
      "$(fmt_seconds W2_save.pt)" "$(fmt_seconds W2_save.dcp)" \
      "$(ratio W2_save.pt W2_save.dcp)" "≥ 30× PyTorch" \
      "$(met 'p / d >= 30' p=W2_save.pt d=W2_save.dcp)"
  row "W2 load, 3 ranks, a third each" \
      "$(fmt_seconds W2_load.pt)" "$(fmt_seconds W2_load.dcp)" \
      "$(ratio W2_load.pt W2_load.dcp)" "≥ 15× PyTorch" \
      "$(met 'p / d >= 15' p=W2_load.pt d=W2_load.dcp)"
fi
if has W3; then
  row "W3 async save of W1: until the second call returns (steady state)" \
      "$(fmt_seconds W3_return.pt) (no copy of CPU tensors)" "$(fmt_seconds W3_return.dcp)" \
      "$(ratio W3_return.pt W3_return.dcp)" "≤ 1.5× memcpy" \
      "$(met 'd <= 1.5 * m' d=W3_return.dcp m=W3_memcpy)"
  row "↳ memcpy of each rank's bytes into touched buffers, 4 ranks at once" "—" \
      "$(fmt_seconds W3_memcpy)" "—" "reference" ""
  row "↳ the first call (sets up the background group, allocates)" \
      "$(fmt_seconds W3_first.pt)" "$(fmt_seconds W3_first.dcp)" \
      "$(ratio W3_first.pt W3_first.dcp)" "—" ""
  row "↳ until the second save is complete" "$(fmt_seconds W3_complete.pt)" \
      "$(fmt_seconds W3_complete.dcp)" "$(ratio W3_complete.pt W3_complete.dcp)" "—" ""
fi
if has W4; then
  row "W4 save planning, $w4_save_ranks ranks × $w4_tensors tensors" \
      "$(fmt_seconds W4_save.pt)" "$(fmt_seconds W4_save.dcp)" \
      "$(ratio W4_save.pt W4_save.dcp)" "—" ""
  # The goal is judged against PyTorch's per-rank part alone (what issue 10
  # measured), so that its quadratic global validation does not flatter dcp,
  # whose figure includes its whole global step.
  row "↳ PyTorch: the ranks' set_up + create_local_plan only" \
      "$(fmt_seconds W4_save_local.pt)" "$(fmt_seconds W4_save.dcp)" \
      "$(ratio W4_save_local.pt W4_save.dcp)" "≥ 10× PyTorch" \
      "$(met 'p / d >= 10' p=W4_save_local.pt d=W4_save.dcp)"
  row "W4 load planning, $w4_load_ranks ranks against it" \
      "$(fmt_seconds W4_load.pt)" "$(fmt_seconds W4_load.dcp)" \
      "$(ratio W4_load.pt W4_load.dcp)" "≥ 100× PyTorch" \
      "$(met 'p / d >= 100' p=W4_load.pt d=W4_load.dcp)"
fi
if has W5; then
  row "W5 build + look up $w5_keys keys (PyTorch: Python dict)" \
      "$(fmt_seconds W5.pt)" "$(fmt_seconds W5.dcp)" "$(ratio W5.pt W5.dcp)" "dcp < 0.1 s" \
      "$(met 'd < 0.1' d=W5.dcp)"
fi
echo
if [ "$failures" -gt 0 ]; then
  echo "**$failures run(s) failed** (their output is above, on stderr)."
  exit 1
fi
exit 0
