#!/usr/bin/env bash
# A training job killed with SIGKILL while a checkpoint may be in flight
# resumes from its latest complete step and ends exactly where an
# uninterrupted run ends (bitwise equal parameters).
#
#   train_resume_test.sh DCP_BINARY TRAIN_RESUME_BINARY
set -uo pipefail

die() { echo "train_resume_test: FAIL: $*" >&2; exit 1; }

[ "$#" -eq 2 ] || die "usage: train_resume_test.sh DCP TRAIN_RESUME"
dcp="$1"
train="$2"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
args=(--steps=12 --save_every=3)

echo "=== uninterrupted run"
"$dcp" launch --nproc=2 -- "$train" --root="$tmp/a" "${args[@]}" \
    --out="$tmp/a.txt" | tee "$tmp/a.log" || die "the uninterrupted run failed"
grep -q "starting from scratch" "$tmp/a.log" || die "run a did not start from scratch"
[ -s "$tmp/a.txt" ] || die "run a wrote no parameters"
# max_to_keep 2: the last two saves remain.
[ "$(ls "$tmp/a")" = "$(printf 'step_12\nstep_9')" ] || die "run a kept: $(ls "$tmp/a" | tr '\n' ' ')"

echo "=== a run that SIGKILLs its rank 0 after issuing the save of step 6"
if "$dcp" launch --nproc=2 -- "$train" --root="$tmp/b" "${args[@]}" \
    --sigkill_after_save=6 --out="$tmp/b.txt" > "$tmp/b1.log" 2>&1; then
  cat "$tmp/b1.log"
  die "the killed run succeeded"
fi
cat "$tmp/b1.log"
grep -q "SIGKILL after issuing the save of step 6" "$tmp/b1.log" || die "rank 0 was not killed at step 6"
[ ! -e "$tmp/b.txt" ] || die "the killed run wrote its parameters"

echo "=== the same command again: it resumes"
"$dcp" launch --nproc=2 -- "$train" --root="$tmp/b" "${args[@]}" \
    --out="$tmp/b.txt" | tee "$tmp/b2.log" || die "the resumed run failed"
# Step 6 may or may not have been committed before the kill; step 3 was.
grep -Eq "resumed from step (3|6)$" "$tmp/b2.log" || die "did not resume from step 3 or 6"

cmp "$tmp/a.txt" "$tmp/b.txt" || die "the resumed run ended with other parameters"
echo "train_resume_test: PASS ($(grep -Eo 'resumed from step [0-9]+' "$tmp/b2.log"))"
