#!/usr/bin/env bash
# Installs (when missing) and starts the real services Blytz's tests and `make run` use:
# PostgreSQL, a Docker engine, Caddy, an S3-protocol server, plus the local customer stand-in image.
# Idempotent: every step checks first and only acts when something is not already answering.
#
#   scripts/services.sh [postgres|docker|isolation|caddy|s3|image|openclaw|tools|all]...
#
# Needs root (it installs Debian packages and starts daemons).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  die "must run as root: it installs Debian packages (postgresql, docker.io, caddy, busybox-static) and starts daemons. Re-run with sudo, or start those services yourself and set DATABASE_URL, DOCKER_HOST and CADDY_ADMIN_URL."
fi

APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # seconds, description, command...
  local secs=$1 what=$2; shift 2
  for _ in $(seq 1 $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "$what did not come up within ${secs}s"
}

PG_USER=${BLYTZ_TEST_PG_USER:-blytz}
PG_PASSWORD=${BLYTZ_TEST_PG_PASSWORD:-blytz}
PG_DB=${BLYTZ_TEST_PG_DB:-blytz}

start_postgres() {
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
    apt_install postgresql
  fi
  local version
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$version main$"; then
    pg_createcluster "$version" main >/dev/null
  fi
  if ! pg_isready -q -h /var/run/postgresql; then
    log "starting PostgreSQL $version"
    pg_ctlcluster "$version" main start
    wait_for 30 "PostgreSQL" pg_isready -q -h /var/run/postgresql
  fi
  # A superuser role with a password: tests create one database per test file.
  su postgres -c "psql -qtAX -v ON_ERROR_STOP=1" >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE "$PG_USER" LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE "$PG_DB" OWNER "$PG_USER"'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')\gexec
SQL
  log "PostgreSQL ready: postgres://$PG_USER:***@127.0.0.1:5432/$PG_DB"
}

docker_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# overlay2 first: vfs copies the whole image for every container (about 700 MB and 10 to 50 s
# for the OpenClaw image, against 0.2 s on overlay2). Where the daemon refuses overlay2 (no
# overlay mount on this kernel or backing filesystem), vfs still works. BLYTZ_DOCKER_STORAGE_DRIVER
# picks one driver and skips the other. Each driver keeps its own image store, so images are
# imported again after a change (the image targets check for their image, not for the driver).
start_docker() {
  command -v dockerd >/dev/null || apt_install docker.io
  if ! docker_answers; then
    local driver started=0
    for driver in ${BLYTZ_DOCKER_STORAGE_DRIVER:-overlay2 vfs}; do
      log "starting dockerd (storage driver $driver)"
      # No iptables: what works inside this kind of sandboxed machine.
      nohup dockerd --storage-driver="$driver" --iptables=false --ip6tables=false >/var/log/dockerd.log 2>&1 &
      local pid=$!
      for _ in $(seq 1 600); do
        if docker_answers; then started=1; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      [ "$started" -eq 1 ] && break
      log "dockerd did not come up with $driver: $(tail -n 3 /var/log/dockerd.log | tr '\n' ' ')"
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    done
    [ "$started" -eq 1 ] || die "Docker engine did not come up (see /var/log/dockerd.log)"
  fi
  log "Docker ready (storage driver $(docker info --format '{{.Driver}}' 2>/dev/null))"
}

# Tenant isolation between customer containers (docs/security.md): the engine above runs without
# iptables, so nothing would stop one customer's container from reaching another's across the
# host's routing. The ruleset matches customer networks by their bridge names (bz-*) and touches
# nothing else on the machine; loading it again replaces only its own table.
start_isolation() {
  command -v nft >/dev/null || apt_install nftables
  nft -f deploy/host/blytz-tenants.nft || die "could not load deploy/host/blytz-tenants.nft (a kernel without nf_tables?)"
  log "tenant isolation ruleset loaded (nft table inet blytz_tenants)"
}

caddy_answers() { curl -fsS -o /dev/null "${CADDY_ADMIN_URL:-http://127.0.0.1:2019}/config/" 2>/dev/null; }

start_caddy() {
  command -v caddy >/dev/null || apt_install caddy
  command -v curl >/dev/null || apt_install curl
  if ! caddy_answers; then
    log "starting caddy"
    nohup caddy run --config /dev/null >/var/log/caddy.log 2>&1 &
    wait_for 30 "Caddy (see /var/log/caddy.log)" caddy_answers
  fi
  log "Caddy ready"
}

# An S3-protocol server for the backup tests (BLYTZ_BACKUP_URL=s3://...): s3rver, the npm
# package (a devDependency, so `npm ci` installs it; no other registry is reachable here). It
# speaks S3's REST protocol on a folder: SigV4-signed requests with its fixed key pair
# S3RVER/S3RVER, buckets, single and multipart uploads, ranged GETs, so the real AWS SDK runs
# unchanged against it. Debian 12's only S3 server is Ceph's radosgw, which needs a whole Ceph
# cluster. Tests make their own buckets on it.
S3_PORT=${BLYTZ_TEST_S3_PORT:-4568}
S3_DIR=${BLYTZ_TEST_S3_DIR:-/var/lib/blytz-s3}
s3_answers() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/" 2>/dev/null | grep -qE '^[2-4][0-9][0-9]$'; }

start_s3() {
  command -v curl >/dev/null || apt_install curl
  if ! s3_answers; then
    [ -f node_modules/s3rver/bin/s3rver.js ] || { scripts/ensure-node.sh && PATH="$PWD/.tools/bin:$PATH" npm ci --no-audit --no-fund --loglevel=error; }
    mkdir -p "$S3_DIR"
    log "starting s3rver on 127.0.0.1:$S3_PORT ($S3_DIR)"
    PATH="$PWD/.tools/bin:$PATH" nohup node node_modules/s3rver/bin/s3rver.js --address 127.0.0.1 --port "$S3_PORT" \
      --directory "$S3_DIR" --silent >/var/log/blytz-s3.log 2>&1 &
    wait_for 30 "s3rver (see /var/log/blytz-s3.log)" s3_answers
  fi
  log "S3 server ready: http://127.0.0.1:$S3_PORT (key S3RVER/S3RVER)"
}

build_image() {
  start_docker

  [ -x /bin/busybox ] || apt_install busybox-static
  scripts/build-test-image.sh
}

# The real customer image, ghcr.io/openclaw/openclaw:<pinned>, built from the npm package (no
# registry here); also leaves the package in .tools/openclaw/<version> for the config validator tests.
build_openclaw_image() {
  start_docker
  [ -x /bin/busybox ] || apt_install busybox-static
  scripts/build-openclaw-image.sh
}

# Test tools: promtool (metrics and alert rules checks), Chromium (browser tests), ip (chaos).
install_tools() {
  local missing=()
  command -v promtool >/dev/null || missing+=(prometheus)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v ip >/dev/null || missing+=(iproute2) # the chaos suite's private Docker bridge
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(all)
for t in "${targets[@]}"; do
  case "$t" in
    postgres) start_postgres ;;
    docker) start_docker; start_isolation ;;
    isolation) start_isolation ;;
    caddy) start_caddy ;;
    s3) start_s3 ;;
    image) build_image ;;
    openclaw) build_openclaw_image ;;
    tools) install_tools ;;
    all) start_postgres; start_docker; start_isolation; start_caddy; start_s3; build_image; build_openclaw_image; install_tools ;;
    *) die "unknown target '$t' (postgres, docker, isolation, caddy, s3, image, openclaw, tools, all)" ;;
  esac
done
