#!/usr/bin/env bash
# Installs and starts what the test suite talks to, when this machine lacks it.
# Idempotent: a second run only checks. Needs root (or sudo) only to install or start.
set -euo pipefail

# Debian packages the suite needs. Servers that tests start themselves on free ports
# (a second mosquitto for broker restarts, victoria-metrics, influxdb) only need installing.
# socat makes pty pairs for Modbus RTU; mbpoll is an independent Modbus master that
# cross-checks our register decoding.
PACKAGES=(mosquitto mosquitto-clients postgresql socat mbpoll victoria-metrics influxdb)
# The console's browser tests drive Debian's chromium (no browser download works here),
# with a CJK font so Chinese pages render as text, not boxes.
PACKAGES+=(chromium fonts-wqy-microhei)
PACKAGES+=(${PATROL_EXTRA_PACKAGES:-})

say() { echo "services: $*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root to run: $*"; return 1; fi
}

listening() {  # host port -> 0 when something accepts TCP there
    python3 - "$1" "$2" <<'PY'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}

wait_for() {  # what host port
    for _ in $(seq 1 60); do listening "$2" "$3" && return 0; sleep 0.5; done
    say "$1 did not come up on $2:$3"; return 1
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
fresh_postgres=no
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    [[ " ${missing[*]} " == *" postgresql "* ]] && fresh_postgres=yes
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

# Mosquitto on 127.0.0.1:1883 (Debian's default config listens on loopback only).
if ! listening 127.0.0.1 1883; then
    say "starting mosquitto"
    if [ -f /etc/mosquitto/mosquitto.conf ]; then
        as_root mosquitto -d -c /etc/mosquitto/mosquitto.conf
    else
        as_root mosquitto -d
    fi
    wait_for mosquitto 127.0.0.1 1883
fi

# PostgreSQL on 127.0.0.1:5432 with trust auth and a database `test`.
cluster=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
if [ "$fresh_postgres" = yes ] && [ -n "$cluster" ]; then
    hba=/etc/postgresql/$cluster/main/pg_hba.conf
    say "trusting loopback connections in $hba (a fresh test install)"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
fi
if ! listening 127.0.0.1 5432; then
    say "starting PostgreSQL $cluster"
    as_root pg_ctlcluster --skip-systemctl-redirect "$cluster" main start \
        || as_root pg_ctlcluster "$cluster" main start
    wait_for postgresql 127.0.0.1 5432
elif [ "$fresh_postgres" = yes ]; then
    as_root pg_ctlcluster "$cluster" main reload || true
fi
if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
    say "creating database test"
    as_root su postgres -c "createdb test" 2>/dev/null \
        || psql -h 127.0.0.1 -U postgres -Atc 'create database test' >/dev/null
fi
say "ready: mosquitto 127.0.0.1:1883, postgresql 127.0.0.1:5432/test"
