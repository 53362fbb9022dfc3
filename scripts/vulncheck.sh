#!/usr/bin/env bash
# govulncheck on every package of the module, against a pinned copy of the
# Go vulnerability database, with nothing but the Go module proxy: the
# database's source, golang.org/x/vulndb, is a Go module, and
# scripts/vulndb builds the database govulncheck reads (-db file://) from its
# data/osv. Fails (exit 3) when the code calls a known-vulnerable function
# of a module or of the standard library. scripts/test.sh (CI) runs it.
#
# Both versions are pinned here; to refresh them, see docs/security.md
# ("Known vulnerabilities"). The database's age is printed on every run.
# The downloads and the database are cached in $HAVEN_VULNCHECK_CACHE
# (default ~/.cache/haven-vulncheck): a second run costs govulncheck's scan only.
set -euo pipefail
cd "$(dirname "$0")/.."

GOVULNCHECK_VERSION=v1.10.0
# golang.org/x/vulndb at commit e22db6528018, 2026-11-05 23:49:57 UTC.
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
VULNDB_SUM=h1:mfngRv0Yoh0VApsXKEN82CjD99kl7mtparN3bs3JnqI=

# Check with the Go that builds Haven (scripts/test.sh, scripts/package.sh):
# go.mod's toolchain line. The standard library is checked too.
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
cache=${HAVEN_VULNCHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/haven-vulncheck}
mkdir -p "$cache"

bin=$cache/govulncheck-$GOVULNCHECK_VERSION/govulncheck
if [ ! -x "$bin" ]; then
  # Its own go.sum pins its dependencies; GOFLAGS=-mod=mod does not apply to it.
  GOFLAGS= GOBIN=$(dirname "$bin") go install "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION"
fi

db=$cache/vulndb-$VULNDB_VERSION
if [ ! -f "$db/index/modules.json" ]; then
  mod=golang.org/x/vulndb@$VULNDB_VERSION
  # The module's hash is checked against go.sum's database (sum.golang.org,
  # through the proxy) by go itself, and against the pin here.
  sum=$(GOFLAGS= go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",*$/\1/p')
  if [ "$sum" != "$VULNDB_SUM" ]; then
    echo "vulncheck.sh: $mod has hash '$sum', pinned $VULNDB_SUM" >&2
    exit 1
  fi
  read -r src when < <(GOFLAGS= go list -m -f '{{.Dir}} {{.Time.UTC.Format "2006-01-02T15:04:05Z07:00"}}' "$mod")
  tmp=$(mktemp -d "$cache/vulndb.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  go run ./scripts/vulndb -osv "$src/data/osv" -out "$tmp/db" -modified "$when" >/dev/null
  rm -rf "$db"
  mv "$tmp/db" "$db"
fi
echo "vulncheck.sh: govulncheck $GOVULNCHECK_VERSION, $(go env GOVERSION), database golang.org/x/vulndb@$VULNDB_VERSION ($(sed 's/.*"modified":"\([^"]*\)".*/\1/' "$db/index/db.json"))"

status=0
"$bin" -db "file://$db" ./... || status=$?
if [ "$status" = 3 ]; then
  cat >&2 <<EOF
vulncheck.sh: Haven calls known-vulnerable code (above). Upgrade the module to
its "Fixed in" version (go get MODULE@VERSION, an exact pin), or for the standard
library raise go.mod's toolchain line; see docs/security.md.
EOF
fi
exit "$status"
