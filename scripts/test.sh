#!/usr/bin/env bash
# Installs what the tests need (Debian packages, Go modules, the test guest)
# and runs every test: vet, gofmt, govulncheck, the race-enabled unit and
# integration suites, and the simulator's scenario files. Used as-is by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS=${GOFLAGS:--mod=mod}
# Build and test with the Go of go.mod's toolchain line (a Go security
# release; the proxy serves it), whatever `go env GOTOOLCHAIN` says.
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}

bash scripts/deps.sh
bash scripts/build-test-guest.sh >/dev/null
# TestRollingUpgrade builds the previous release from git history: a
# shallow clone gets it from its origin when it can.
if [ "$(git rev-parse --is-shallow-repository 2>/dev/null)" = true ]; then
  git fetch -q --unshallow 2>/dev/null || echo "test.sh: a shallow clone whose history cannot be fetched: TestRollingUpgrade will be skipped"
fi

# Logs of this run only: two runs never overwrite each other's.
logs=$(mktemp -d "${TMPDIR:-/tmp}/haven-test.XXXXXX")
echo "== logs in $logs"

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== go build"
go build -o bin/haven ./cmd/haven
echo "== govulncheck (pinned database, offline; docs/security.md)"
bash scripts/vulncheck.sh
echo "== haven sim run (shared scenarios)"
if [ -d ../shared/scenarios ]; then ./bin/haven sim run ../shared/scenarios >"$logs/sim-shared.log" || { tail -50 "$logs/sim-shared.log"; exit 1; }; tail -1 "$logs/sim-shared.log"; fi
echo "== haven sim run (shared scenarios, new rules)"
if [ -d ../shared/scenarios-new ]; then ./bin/haven sim run ../shared/scenarios-new >"$logs/sim-shared-new.log" || { tail -50 "$logs/sim-shared-new.log"; exit 1; }; tail -1 "$logs/sim-shared-new.log"; fi
# A count, not a duration: with a duration as short as 1s, go test's fuzz
# engine can stop with "context deadline exceeded" while it still measures
# the seed corpus's coverage, a failure that is no finding.
echo "== fuzz (every target for 2000 inputs; by hand: FUZZTIME=5m scripts/fuzz.sh)"
FUZZTIME=${FUZZTIME:-2000x} bash scripts/fuzz.sh >"$logs/fuzz.log" 2>&1 || { cat "$logs/fuzz.log"; exit 1; }
tail -1 "$logs/fuzz.log"
echo "== go test -race (progress below; the whole output is in $logs/go-test.json)"
go build -o "$logs/testprogress" ./scripts/testprogress
go test -race -count=1 -timeout 40m -p 2 -json ./... 2>&1 | "$logs/testprogress" -log "$logs/go-test.json"
