#!/usr/bin/env bash
# Install the system packages Quartier's tests and demo need, when they are missing (Debian/Ubuntu).
#
#   PostgreSQL >= 15 with PostGIS   the store (the distro's PostgreSQL, e.g. postgresql-15 and
#                                   postgresql-15-postgis-3 on Debian 12)
#   mosquitto                       the MQTT broker of the demo and the ingest tests
#   nodejs, npm (Node.js >= 20)     the PGlite TimescaleDB engine of tests/test_timescaledb.py
#   poppler-utils                   pdftoppm, which the report tests use to look at PDF pages
#   chromium                        the browser tests of the maps and /docs (Debian's chromium at
#                                   /usr/bin/chromium, driven by Playwright; never Playwright's
#                                   own browser downloads)
#
# Idempotent: what is there is left alone, and with nothing missing nothing is run. As root it
# runs apt-get (printing each command); otherwise it prints the command to run and exits 1 if
# anything is missing. `make test` and `make demo` call it first. `quartier services up` only
# checks and names what is missing.
#
#   scripts/install-deps.sh           install (root) or report (not root) what is missing
#   scripts/install-deps.sh --check   only report; exit 1 if anything is missing
#   scripts/install-deps.sh --demo    only what `make demo` needs (PostgreSQL/PostGIS, mosquitto)
set -euo pipefail

MIN_NODE_MAJOR=20 # keep in step with MIN_NODE_MAJOR in tests/timescale_engine.py
MIN_PG_MAJOR=15

check_only=0
demo_only=0
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    --demo) demo_only=1 ;;
    -h | --help)
      sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "install-deps.sh: unknown option $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

say() { echo "install-deps: $*"; }

# The newest PostgreSQL server >= MIN_PG_MAJOR installed in the Debian layout (empty if none).
pg_major() {
  local best="" d v
  for d in /usr/lib/postgresql/*/bin/initdb; do
    [ -x "$d" ] || continue
    v=$(basename "$(dirname "$(dirname "$d")")")
    [[ "$v" =~ ^[0-9]+$ ]] || continue
    if [ "$v" -ge "$MIN_PG_MAJOR" ] && { [ -z "$best" ] || [ "$v" -gt "$best" ]; }; then
      best=$v
    fi
  done
  echo "$best"
}

node_major() {
  command -v node >/dev/null 2>&1 || return 0
  node --version 2>/dev/null | sed -n 's/^v\([0-9][0-9]*\)\..*/\1/p'
}

# Debian package names still needed, one per line; notes for stderr go to $notes.
missing=()
notes=()
compute_missing() {
  missing=()
  notes=()
  local pg
  pg=$(pg_major)
  if [ -z "$pg" ]; then
    missing+=(postgresql postgresql-postgis) # the distro's current major, with its PostGIS
  elif ! ls "/usr/share/postgresql/$pg/extension/postgis.control" >/dev/null 2>&1; then
    missing+=("postgresql-$pg-postgis-3")
  fi
  if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    missing+=(mosquitto)
  fi
  [ "$demo_only" = 1 ] && return 0
  if ! command -v node >/dev/null 2>&1; then
    missing+=(nodejs)
  fi
  if ! command -v npm >/dev/null 2>&1; then
    missing+=(npm)
  fi
  local nm
  nm=$(node_major)
  if [ -n "$nm" ] && [ "$nm" -lt "$MIN_NODE_MAJOR" ]; then
    notes+=("node v$nm is too old for the PGlite TimescaleDB engine (needs >= $MIN_NODE_MAJOR;" \
      "the distro's nodejs may be older: install Node.js $MIN_NODE_MAJOR or newer, e.g. from" \
      "nodesource, or set QUARTIER_TEST_TIMESCALE_URL to a TimescaleDB server)")
  fi
  if ! command -v pdftoppm >/dev/null 2>&1; then
    missing+=(poppler-utils)
  fi
  if ! command -v chromium >/dev/null 2>&1; then
    missing+=(chromium)
  fi
}

present() {
  if [ "$demo_only" = 1 ]; then
    echo "PostgreSQL $(pg_major) with PostGIS, mosquitto"
  else
    echo "PostgreSQL $(pg_major) with PostGIS, mosquitto, node $(node --version)," \
      "npm $(npm --version 2>/dev/null), pdftoppm, chromium"
  fi
}

compute_missing
if [ ${#missing[@]} -eq 0 ] && [ ${#notes[@]} -eq 0 ]; then
  say "all present ($(present))"
  exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
  is_debian=0
  if [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then is_debian=1; fi
  if [ "$check_only" = 1 ] || [ "$(id -u)" != 0 ] || [ "$is_debian" = 0 ]; then
    say "missing: ${missing[*]}"
    if [ "$is_debian" = 1 ]; then
      say "run: sudo $0   (or: sudo apt-get install ${missing[*]})"
    else
      say "not Debian/Ubuntu: install PostgreSQL >= $MIN_PG_MAJOR with PostGIS, mosquitto," \
        "Node.js >= $MIN_NODE_MAJOR with npm, poppler-utils and chromium by other means," \
        "or use Docker (docker compose up -d)"
    fi
    for n in "${notes[@]}"; do say "$n"; done
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  say "installing: ${missing[*]}"
  say "+ apt-get update -qq"
  apt-get update -qq
  say "+ apt-get install -y -qq --no-install-recommends ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # "postgresql-postgis" follows the distro's default major; an installed newer server still
  # needs its own PostGIS package: one more round for that.
  compute_missing
  if [ ${#missing[@]} -gt 0 ]; then
    say "+ apt-get install -y -qq --no-install-recommends ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    compute_missing
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    say "still missing after apt-get: ${missing[*]}"
    exit 1
  fi
fi

if [ ${#notes[@]} -gt 0 ]; then
  for n in "${notes[@]}"; do say "$n"; done
  exit 1
fi
say "done ($(present))"
