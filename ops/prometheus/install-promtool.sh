#!/bin/sh
# Install promtool (Debian's `prometheus` package) when it is missing; idempotent.
#
# The package ships a Prometheus server service too. Nothing here may start it: a
# policy-rc.d that forbids starting services is in place during the install (the one
# already there is kept), and a server the package started anyway is stopped, so that
# nothing is left listening on port 9090.
set -eu
command -v promtool >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "promtool is missing: install Debian's 'prometheus' package (as root)" >&2
    exit 1
fi
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    added_policy=1
fi
cleanup() {
    if [ -n "$added_policy" ]; then rm -f "$policy"; fi
}
trap cleanup EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
    >/dev/null
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
    systemctl disable prometheus >/dev/null 2>&1 || true
fi
if command -v service >/dev/null 2>&1; then
    service prometheus stop >/dev/null 2>&1 || true
fi
command -v promtool >/dev/null
