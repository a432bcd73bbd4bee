#!/bin/bash
# Runs every case of the hostile corpus (make_hostile_corpus) through the
# `dcp` tool's entry points that read a checkpoint: `inspect` (.metadata
# only), `verify` (every record) and `to-torch-save` (a full load), and
# checks each outcome against the table below:
#   ok      exit 0
#   any     exit 0 or 1 (the command need not look at what is wrong)
#   REGEX   exit 1 or 2, and the output matches the extended regex
#           (ignoring case)
# Every run must end within 60 s, by itself (a hang fails), with no crash,
# sanitizer report, std::bad_alloc or CHECK failure. Outside the sanitizers
# every run has `ulimit -v 2000000` (2 GB of address space); under them,
# where ulimit -v cannot work, ASan's hard_rss_limit_mb=2000 stands in.
#
# Usage: hostile_corpus_test.sh MAKE_CORPUS DCP
set -uo pipefail
make_corpus="$1"
dcp="$2"
work="${TEST_TMPDIR:-$(mktemp -d)}/hostile"
rm -rf "$work" && mkdir -p "$work"
"$make_corpus" "$work/corpus" > "$work.cases" 2> "$work.log" || {
  cat "$work.log"; echo "FAIL: generating the corpus"; exit 1; }

sanitized=0
if [ -n "${ASAN_OPTIONS:-}" ] || [ -n "${TSAN_OPTIONS:-}" ]; then
  sanitized=1
  export ASAN_OPTIONS="${ASAN_OPTIONS:-}:hard_rss_limit_mb=2000"
fi

failures=0
runs=0
# check CASE COMMAND EXPECTATION
check() {
  local case="$1" command="$2" expect="$3"
  local dir="$work/corpus/$case" out="$work/$case.$command.out"
  local args=("$dir")
  [ "$command" = to-torch-save ] && args+=("$work/$case.pt")
  runs=$((runs + 1))
  (
    [ "$sanitized" -eq 1 ] || ulimit -v 2000000
    exec timeout 60 "$dcp" "$command" "${args[@]}"
  ) > "$out" 2>&1
  local code=$?
  local problem=""
  if [ "$code" -eq 124 ]; then
    problem="did not end within 60 s"
  elif [ "$code" -ge 3 ]; then
    problem="crashed (exit $code)"
  elif grep -qE "bad_alloc|terminate called|Check failed|Sanitizer|runtime error" "$out"; then
    problem="crashed or tripped a sanitizer"
  else
    case "$expect" in
      ok)  [ "$code" -eq 0 ] || problem="failed (exit $code), expected success" ;;
      any) ;;
      *)   if [ "$code" -eq 0 ]; then
             problem="succeeded, expected an error matching /$expect/"
           elif ! grep -qiE -- "$expect" "$out"; then
             problem="error does not match /$expect/"
           fi ;;
    esac
  fi
  if [ -n "$problem" ]; then
    failures=$((failures + 1))
    echo "FAIL: dcp $command on $case: $problem; output:"
    head -c 3000 "$out" | sed 's/^/    /'
  else
    echo "ok: dcp $command on $case (exit $code)"
  fi
}

meta='\.metadata'
checked=""
while read -r case inspect verify load; do
  [ -z "$case" ] || [ "${case:0:1}" = "#" ] && continue
  grep -qx "$case" "$work.cases" || { echo "FAIL: no case $case"; failures=$((failures + 1)); continue; }
  checked="$checked $case"
  check "$case" inspect "${inspect//@meta/$meta}"
  check "$case" verify "${verify//@meta/$meta}"
  check "$case" to-torch-save "${load//@meta/$meta}"
done <<'TABLE'
# case                  inspect                     verify                      to-torch-save
good                    ok                          ok                          ok
shared_key_metadata     @meta.*expands.*decoded     @meta.*expands.*decoded     @meta.*expands.*decoded
deeply_nested_metadata  @meta.*nest                 @meta.*nest                 @meta.*nest
huge_metadata           @meta.*more.than            @meta.*more.than            @meta.*more.than
fifo_metadata           @meta.*(FIFO|regular)       @meta.*(FIFO|regular)       @meta.*(FIFO|regular)
directory_metadata      @meta.*(directory|regular)  @meta.*(directory|regular)  @meta.*(directory|regular)
truncated_metadata      @meta                       @meta                       @meta
fifo_data_file          ok                          distcp.*(FIFO|regular)      distcp.*(FIFO|regular)
symlink_data_file       ok                          distcp.*symbolic            distcp.*symbolic
missing_data_file       ok                          distcp                      distcp
truncated_data_file     ok                          distcp                      distcp
flipped_tensor_byte     ok                          distcp.*(crc|checksum)      (crc|checksum).*distcp
overlapping_chunks      any                         overlap                     overlap
chunk_outside_tensor    any                         not.inside                  not.inside
gap_between_chunks      any                         cover.24.of.30              holds.24.of.the.30
oversized_tensor_claim  any                         cover.24.of.4294967296      declares.*hold.only
TABLE

while read -r case; do
  case " $checked " in
    *" $case "*) ;;
    *) echo "FAIL: case $case has no row in the table"; failures=$((failures + 1)) ;;
  esac
done < "$work.cases"
cases=$(grep -c . "$work.cases")
echo "hostile corpus: $cases cases, $runs runs, $failures failed"
[ "$failures" -eq 0 ] || exit 1
echo PASS
