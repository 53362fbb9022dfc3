#!/usr/bin/env bash
# Runs every fuzz target of the module (decoders of network and file input:
# API bodies, guest definitions, libvirt XML, Xen configs, fence metadata,
# scenario files, join tokens and CSRs, guest paths) for FUZZTIME each.
# CI runs it briefly (scripts/test.sh: 2000 inputs each, about 3 min with the
# builds); by hand, longer (a duration, or a count such as 100000x):
#   FUZZTIME=5m scripts/fuzz.sh            # every target
#   FUZZTIME=1h scripts/fuzz.sh FuzzSignCSR # one
# A failure leaves its input under the package's testdata/fuzz/ (commit it
# with the fix: it becomes a regression test).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
only=${1:-}
fail=0
n=0
while IFS=: read -r file name; do
  [ -n "$only" ] && [ "$name" != "$only" ] && continue
  pkg="./$(dirname "$file")"
  n=$((n+1))
  if ! out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1); then
    echo "FAIL $name ($pkg)"; echo "$out" | grep -v '^fuzz: elapsed' | tail -20; fail=1
  else
    echo "ok   $name ($pkg)"
  fi
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' internal test cmd 2>/dev/null | sed 's/:func /:/' | sort)
echo "$n fuzz targets, $fuzztime each"
exit $fail
