#!/bin/sh
# Runs a command beside a throwaway PostgreSQL server (tests/test_tune.py's shared study), then
# stops the server and removes its data, also when the command fails or is interrupted.
# Installs Debian's postgresql where it is missing (as root, or with sudo). Where no server can
# be had it says so in one loud line and runs the command anyway: the PostgreSQL test then skips.
set -u

warn() {
    echo "!!! with-postgres: $1; tests/test_tune.py's PostgreSQL test will SKIP" >&2
}

pg_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo -n"
fi
if [ -z "$(pg_bin)" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends postgresql; } >/dev/null 2>&1 \
        || warn "apt-get install postgresql failed"
fi
BIN="$(pg_bin)"
if [ -z "$BIN" ]; then
    warn "no PostgreSQL server binaries (install Debian's postgresql package)"
    exec "$@"
fi

DIR="$(mktemp -d /tmp/maskcls-pg.XXXXXX)"
# The server refuses to run as root: as root it runs as the package's postgres user.
AS=""
if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$DIR"
    AS="runuser -u postgres --"
fi
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

stop() {
    $AS "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1
    rm -rf "$DIR"
}

if $AS "$BIN/initdb" -D "$DIR/data" -A trust -U maskcls >"$DIR/initdb.log" 2>&1 \
    && $AS "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off" start >/dev/null 2>&1; then
    trap stop EXIT
    trap 'exit 130' INT TERM
    export MASKCLS_TEST_POSTGRES="postgresql://maskcls@127.0.0.1:$PORT/postgres"
    echo "with-postgres: a throwaway server on 127.0.0.1:$PORT for this run"
else
    warn "the server did not start ($(tail -n 1 "$DIR/server.log" 2>/dev/null || tail -n 1 "$DIR/initdb.log"))"
    stop
fi
"$@"
