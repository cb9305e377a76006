#!/bin/sh
# `pip install "$@"` into /opt/venv during an image build, trusting the extra
# CA certificates copied to /tmp/build-ca (if any) besides the system ones.
# Only the build uses them; the image's trust store is not changed.
set -eu
bundle=
for cert in /tmp/build-ca/*.crt; do
    [ -f "$cert" ] || continue
    if [ -z "$bundle" ]; then
        bundle=/tmp/pip-ca-bundle.pem
        cat /etc/ssl/certs/ca-certificates.crt >"$bundle"
    fi
    cat "$cert" >>"$bundle"
done
if [ -n "$bundle" ]; then
    export PIP_CERT="$bundle"
fi
status=0
/opt/venv/bin/pip install "$@" || status=$?
rm -f /tmp/pip-ca-bundle.pem
exit "$status"
