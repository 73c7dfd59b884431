#!/usr/bin/env bash
# fuzz.sh: fuzzes every fuzz target of the module, one after another, each
# for FUZZTIME (default 10m). The targets are found in the test files of the
# packages `go list ./...` names, so a new one is never left out. FUZZ, when
# set, is a regular expression (grep -E) the target names must match.
#
# A target that fails has its input written by go test under the package's
# testdata/fuzz/<target>/: fix the code and commit that file, and the default
# suite replays it. The script goes on with the other targets and exits 1
# at the end if any failed.
set -u
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10m}
FUZZ=${FUZZ:-.}

targets=()
while read -r dir files; do
	for f in $files; do
		for name in $(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\([a-z]+ \*testing\.F\).*/\1/p' "$dir/$f"); do
			if grep -Eq -- "$FUZZ" <<<"$name"; then
				targets+=("./$(realpath --relative-to=. "$dir") $name")
			fi
		done
	done
done < <($GO list -f '{{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' ./...)

if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no target matches FUZZ=$FUZZ" >&2
	exit 1
fi
echo "fuzz: ${#targets[@]} targets, $FUZZTIME each"
failed=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "fuzz: $GO test -run '^\$' -fuzz '^$name\$' -fuzztime $FUZZTIME $pkg"
	if ! $GO test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" "$pkg"; then
		failed+=("$pkg $name")
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: failed: ${failed[*]}" >&2
	exit 1
fi
echo "fuzz: every target ran $FUZZTIME without a failure"
