#!/bin/sh
# Entrypoint of the nimbus-postgres image.
#
# As root: make the data volume Postgres's, then re-exec itself as postgres.
# As postgres: on first start (empty $PGDATA) initdb with superuser
# $POSTGRES_USER / $POSTGRES_PASSWORD, password (scram-sha-256) auth for TCP
# from anywhere and trust on the container-local socket. On every start the
# superuser's password is set to $POSTGRES_PASSWORD again, so .env stays the
# truth even for an existing volume. Then it runs postgres listening on all
# interfaces and waits for it; SIGTERM and SIGINT both become Postgres's fast
# shutdown (SIGINT), and the script exits with the server's status.
#
# Environment: POSTGRES_USER (default nimbus), POSTGRES_PASSWORD (required),
# POSTGRES_MAX_CONNECTIONS (default 300), PGDATA. Extra arguments go to
# postgres (e.g. `-c shared_buffers=256MB`).
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=nimbus}"
if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "postgres-entrypoint: POSTGRES_PASSWORD is not set" >&2
    exit 1
fi

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    if [ "$(stat -c %U "$PGDATA")" != postgres ]; then
        chown -R postgres:postgres "$PGDATA"
    fi
    chown postgres:postgres /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

sql_literal() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; }
sql_ident() { printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "postgres-entrypoint: initialising $PGDATA (superuser $POSTGRES_USER)"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 --data-checksums
    rm -f "$pwfile"
    {
        echo "# Added by postgres-entrypoint.sh: the compose network reaches us by password."
        echo "host all all 0.0.0.0/0 scram-sha-256"
        echo "host all all ::/0 scram-sha-256"
    } >>"$PGDATA/pg_hba.conf"
else
    # Single-user mode: no socket is opened, nobody can connect meanwhile.
    echo "ALTER ROLE $(sql_ident "$POSTGRES_USER") WITH PASSWORD $(sql_literal "$POSTGRES_PASSWORD")" |
        postgres --single -D "$PGDATA" -c listen_addresses='' postgres >/dev/null ||
        echo "postgres-entrypoint: warning: could not set the password of $POSTGRES_USER" >&2
fi

postgres -D "$PGDATA" \
    -c listen_addresses='*' \
    -c max_connections="${POSTGRES_MAX_CONNECTIONS:-300}" \
    -c password_encryption=scram-sha-256 \
    -c jit=off \
    "$@" &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null || true' INT TERM
status=0
wait "$pid" || status=$?
# A trapped signal interrupts `wait`; keep waiting until postgres has exited.
while kill -0 "$pid" 2>/dev/null; do
    status=0
    wait "$pid" || status=$?
done
exit "$status"
