#!/bin/bash
# `dcp inspect` on the reported hostile checkpoint (issue 9): a 1.9 MB
# .metadata whose 20,000 storage entries all name one memoized 1 MiB key
# (20 GiB once each fqn is copied) must fail with a clean ResourceExhausted
# naming the file, within 2 GB of memory; a realistic 20,000-key
# checkpoint must still be inspected within the same limit.
#
# The memory limit is `ulimit -v 2000000` (KiB). Sanitizer builds reserve
# terabytes of address space, so there the limit is the sanitizer's
# hard_rss_limit_mb=2000 instead (a process over it is killed, which fails
# the test as surely).
set -u
dcp="$1"
gen="$2"
out="${TEST_TMPDIR:-/tmp}/inspect_hostile"
rm -rf "$out"
mkdir -p "$out/hostile" "$out/realistic"
"$gen" "$out" || { echo "FAIL: generating the checkpoints"; exit 1; }

size=$(stat -c %s "$out/hostile/.metadata")
echo "hostile .metadata: $size bytes"

sanitized=""
if [ -n "${ASAN_OPTIONS:-}" ] || ldd "$dcp" 2>/dev/null | grep -q libasan; then
  sanitized="AddressSanitizer"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-}:hard_rss_limit_mb=2000"
elif [ -n "${TSAN_OPTIONS:-}" ] || ldd "$dcp" 2>/dev/null | grep -q libtsan; then
  sanitized="ThreadSanitizer"
  export TSAN_OPTIONS="${TSAN_OPTIONS:-}:hard_rss_limit_mb=2000"
fi

# Runs dcp inspect on $1 under the memory limit; output in $log.
run_inspect() {
  log="$out/$(basename "$1").log"
  if [ -n "$sanitized" ]; then
    echo "$sanitized build: no ulimit -v (it reserves terabytes of address" \
         "space); limiting RSS to 2000 MB instead"
    "$dcp" inspect "$1" > "$log" 2>&1
  else
    (ulimit -v 2000000 && exec "$dcp" inspect "$1") > "$log" 2>&1
  fi
}

run_inspect "$out/hostile"
code=$?
if [ "$code" -ne 1 ]; then
  cat "$log"
  echo "FAIL: dcp inspect of the hostile checkpoint exited with $code," \
       "expected 1 (a clean error; >128 means it crashed or was killed)"
  exit 1
fi
for expected in "RESOURCE_EXHAUSTED" "$out/hostile/.metadata" \
    "expands to more than"; do
  grep -qF -- "$expected" "$log" || {
    cat "$log"; echo "FAIL: the error does not say \"$expected\""; exit 1; }
done
if grep -q "bad_alloc" "$log"; then
  cat "$log"; echo "FAIL: std::bad_alloc"; exit 1
fi
echo "hostile: $(grep -F RESOURCE_EXHAUSTED "$log" | head -c 300)"

run_inspect "$out/realistic"
code=$?
if [ "$code" -ne 0 ]; then
  cat "$log"
  echo "FAIL: dcp inspect of the realistic checkpoint exited with $code"
  exit 1
fi
grep -qF "model.layers.19999.self_attention." "$log" || {
  head -c 3000 "$log"; echo "FAIL: the last key is not listed"; exit 1; }
echo PASS
