# Nimbus's Postgres: the same base as the service image plus Debian's
# postgresql package (15 on bookworm), so it builds where no registry can
# supply the official postgres image. The data directory is the volume at
# /var/lib/postgresql/data; compose/postgres-entrypoint.sh initialises it on
# first start from POSTGRES_USER / POSTGRES_PASSWORD and runs the server.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG PG_MAJOR=15
ENV PG_MAJOR=${PG_MAJOR} \
    PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8

# create_main_cluster=false: the package must not create a cluster of its own.
# JIT compilation is off (see the entrypoint) and useless for Nimbus's short
# queries, so the LLVM/Z3 libraries it needs (~150 MB of the ~430 MB) are
# deleted; their packages stay registered so apt remains consistent, and
# Postgres simply reports JIT as unavailable if someone turns it on.
RUN mkdir -p /etc/postgresql-common \
    && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log /usr/share/doc/*/changelog* \
    && for pkg in $(dpkg-query -W -f '${Package}\n' 'libllvm*' 'libz3-*' 2>/dev/null); do \
           dpkg -L "$pkg" | while read -r f; do if [ -f "$f" ] && [ ! -L "$f" ]; then rm -f "$f"; fi; done; \
       done \
    && rm -rf "/usr/lib/postgresql/${PG_MAJOR}/lib/bitcode" "/usr/lib/postgresql/${PG_MAJOR}/lib/llvmjit"* \
    && test -x "/usr/lib/postgresql/${PG_MAJOR}/bin/postgres" \
    && mkdir -p "$PGDATA" /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && chmod 700 "$PGDATA"

COPY compose/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh

VOLUME /var/lib/postgresql/data
EXPOSE 5432
# The entrypoint also turns SIGTERM into a fast shutdown; SIGINT is Postgres's own.
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
