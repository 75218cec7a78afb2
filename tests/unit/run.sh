#!/usr/bin/env bash
# Run every unit-test binary in BUILD/tests and print one closing tally.
set -u
build=${1:-build}
export CORRAL_INIT="${CORRAL_INIT:-$build/corral-init}"
passed=0 failed=0 skipped=0 bad=()
for t in "$build"/tests/test-*; do
	[ -x "$t" ] || continue
	echo "== $(basename "$t")"
	out=$(timeout 300 "$t" 2>&1); rc=$?
	echo "$out"
	tally=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -1)
	if [ -z "$tally" ]; then
		echo "  (no tally: exit $rc)"; failed=$((failed + 1)); bad+=("$t"); continue
	fi
	read -r p _ f _ s _ <<<"${tally//,/}"
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
	[ "$rc" -eq 0 ] || { [ "$f" -gt 0 ] || failed=$((failed + 1)); bad+=("$t"); }
done
echo "unit: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ ${#bad[@]} -eq 0 ]
