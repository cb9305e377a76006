#!/usr/bin/env bash
# Make sure a Python 3.11 / Debian bookworm base image exists for compose/*.Dockerfile
# and print its name on stdout (everything else goes to stderr).
#
#   compose/bootstrap-base.sh            # prints e.g. "python:3.11-slim-bookworm"
#   BASE_IMAGE=$(compose/bootstrap-base.sh)
#
# In order:
#   1. $NIMBUS_BASE_IMAGE (default python:3.11-slim-bookworm) if `docker image
#      inspect` finds it, or if `docker pull` fetches it;
#   2. otherwise $NIMBUS_BOOTSTRAP_IMAGE (default nimbus-base:bookworm) if it
#      already exists;
#   3. otherwise build that image once from Debian packages: debootstrap
#      --variant=minbase bookworm from the Debian mirror this host's apt uses
#      (or $NIMBUS_DEBIAN_MIRROR), plus python3, python3-venv, python3-pip,
#      ca-certificates and tini, then `docker import`. Needs root (or sudo) and
#      installs debootstrap with apt-get when missing. Takes a few minutes.
#
# The two bases differ in where Python lives (/usr/local/bin/python3 in the
# official image, /usr/bin/python3 here); the Dockerfiles only rely on
# `python3` being on PATH. NIMBUS_BASE_REBUILD=1 rebuilds the bootstrapped
# image even if it exists. NIMBUS_BASE_NO_PULL=1 skips the `docker pull` try.
set -euo pipefail

BASE_IMAGE="${NIMBUS_BASE_IMAGE:-python:3.11-slim-bookworm}"
BOOTSTRAP_IMAGE="${NIMBUS_BOOTSTRAP_IMAGE:-nimbus-base:bookworm}"
SUITE=bookworm
PACKAGES=(python3 python3-venv python3-pip ca-certificates tini passwd)

log() { echo "bootstrap-base: $*" >&2; }
die() { log "error: $*"; exit 1; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# --- 1 and 2: reuse what is there -----------------------------------------------------------
if image_exists "$BASE_IMAGE"; then
    log "using $BASE_IMAGE (found locally)"
    echo "$BASE_IMAGE"
    exit 0
fi
if [[ "${NIMBUS_BASE_NO_PULL:-0}" != 1 ]]; then
    log "trying: docker pull $BASE_IMAGE"
    if timeout 300 docker pull "$BASE_IMAGE" >&2; then
        log "using $BASE_IMAGE (pulled)"
        echo "$BASE_IMAGE"
        exit 0
    fi
    log "no registry supplied $BASE_IMAGE"
fi
if image_exists "$BOOTSTRAP_IMAGE" && [[ "${NIMBUS_BASE_REBUILD:-0}" != 1 ]]; then
    log "using $BOOTSTRAP_IMAGE (bootstrapped earlier from Debian packages)"
    echo "$BOOTSTRAP_IMAGE"
    exit 0
fi

# --- 3: bootstrap from Debian packages ------------------------------------------------------
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "building $BOOTSTRAP_IMAGE needs root (debootstrap); run as root"
    log "re-running as root via sudo (debootstrap needs it)"
    exec sudo --preserve-env=NIMBUS_BASE_IMAGE,NIMBUS_BOOTSTRAP_IMAGE,NIMBUS_DEBIAN_MIRROR,NIMBUS_DEBIAN_SECURITY_MIRROR,NIMBUS_BASE_REBUILD,DOCKER_HOST \
        env NIMBUS_BASE_NO_PULL=1 "$0" "$@"
fi

# The mirror the host's apt uses for $SUITE (deb822 .sources or one-line .list format);
# $1 is the suite to look for (bookworm or bookworm-security).
host_mirror() {
    local want="$1" file found
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -r "$file" ]] || continue
        if [[ "$file" == *.sources ]]; then
            # Stanzas are separated by blank lines; print the first URI of one whose
            # Suites contain $want and whose Types contain deb.
            found="$(awk -v want="$want" '
                function flush() {
                    if (uri != "" && is_deb && has_suite) { print uri; done = 1 }
                    uri = ""; is_deb = 0; has_suite = 0
                }
                done { next }
                /^[ \t]*$/ { flush(); next }
                /^[ \t]*#/ { next }
                tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") is_deb = 1 }
                tolower($1) == "uris:" { uri = $2 }
                tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == want) has_suite = 1 }
                END { if (!done) flush() }
            ' "$file")"
        else
            found="$(awk -v want="$want" '
                !done && $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == want) { print $i; done = 1 }
                }
            ' "$file")"
        fi
        if [[ -n "$found" ]]; then
            echo "$found"
            return 0
        fi
    done
}

MIRROR="${NIMBUS_DEBIAN_MIRROR:-$(host_mirror "$SUITE")}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${NIMBUS_DEBIAN_SECURITY_MIRROR:-$(host_mirror "$SUITE-security")}"
SECURITY_MIRROR="${SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap with apt-get"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
fi

WORK="$(mktemp -d /var/tmp/nimbus-base.XXXXXX)"
ROOTFS="$WORK/rootfs"
MOUNTED=()
cleanup() {
    local m
    for m in "${MOUNTED[@]}"; do umount -l "$m" 2>/dev/null || true; done
    # Never rm -rf through a mount point that is still there.
    if ! grep -q " $WORK/" /proc/mounts; then rm -rf "$WORK"; else log "left $WORK (still mounted)"; fi
}
trap cleanup EXIT

started=$SECONDS
log "building $BOOTSTRAP_IMAGE: debootstrap --variant=minbase $SUITE from $MIRROR (in $WORK)"
debootstrap --variant=minbase --components=main "$SUITE" "$ROOTFS" "$MIRROR" >&2 \
    || die "debootstrap failed (see $ROOTFS/debootstrap/debootstrap.log)"

# Configure the image like Docker's official debian:bookworm-slim: updates and
# security suites, no services started by package scripts, no docs/man pages/
# translations installed, apt caches cleaned after every install.
cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
rm -f "$ROOTFS/etc/apt/sources.list"
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
printf 'Acquire::Languages "none";\n' >"$ROOTFS/etc/apt/apt.conf.d/docker-no-languages"
printf 'APT::AutoRemove::SuggestsImportant "false";\n' >"$ROOTFS/etc/apt/apt.conf.d/docker-autoremove-suggests"

for fs in proc sys dev; do
    mkdir -p "$ROOTFS/$fs"
    case $fs in
        proc) mount -t proc proc "$ROOTFS/proc" ;;
        sys) mount -t sysfs sysfs "$ROOTFS/sys" ;;
        dev) mount --bind /dev "$ROOTFS/dev" ;;
    esac
    MOUNTED=("$ROOTFS/$fs" "${MOUNTED[@]}")
done
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
in_root() { chroot "$ROOTFS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }
log "installing ${PACKAGES[*]} (and $SUITE-updates/-security upgrades)"
in_root apt-get update -qq >&2
in_root apt-get -y -qq -o Dpkg::Options::=--force-confold dist-upgrade >&2
in_root apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >&2
in_root apt-get clean
in_root python3 --version >&2
for m in "${MOUNTED[@]}"; do umount -l "$m"; done
MOUNTED=()

# Shrink: what the dpkg excludes did not catch (installed by debootstrap before
# they existed), package lists, logs, caches, and host files Docker provides.
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$ROOTFS"/usr/share/{man,groff,info,lintian,linda,locale}/* \
    "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/cache/debconf/*-old \
    "$ROOTFS"/var/log/* "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* "$ROOTFS/debootstrap" \
    "$ROOTFS"/etc/resolv.conf "$ROOTFS"/etc/hostname
: >"$ROOTFS/etc/machine-id"

log "importing $ROOTFS as $BOOTSTRAP_IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "nimbus base: debootstrap --variant=minbase $SUITE from $MIRROR + ${PACKAGES[*]}" \
    - "$BOOTSTRAP_IMAGE" >&2
log "built $BOOTSTRAP_IMAGE in $((SECONDS - started)) s ($(docker image inspect -f '{{.Size}}' "$BOOTSTRAP_IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
echo "$BOOTSTRAP_IMAGE"
