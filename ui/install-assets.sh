#!/bin/sh
# Install the console's front-end assets: the exact versions pinned in ui/package-lock.json,
# from the npm registry, copied into api/console/static/vendor/ where the API serves them
# (/ui/static/vendor/...). Nothing is fetched by a browser from anywhere else.
#
# Idempotent and fast when already done: a stamp, vendor/VERSION, records the lock file's
# hash (and this script's, since it chooses the files); when both match and every file is
# there, nothing runs. The stamp ships with the files: the API takes the assets version
# from it (api.console.assets). Scripts and styles get a gzip-compressed sibling too (sent
# to a browser that accepts gzip).
set -eu
ui="$(cd "$(dirname "$0")" && pwd)"
vendor="$ui/../api/console/static/vendor"
stamp="$vendor/VERSION"

# name in the vendor directory <- path under ui/node_modules
FILES="
mermaid.min.js mermaid/dist/mermaid.min.js
swagger-ui.css swagger-ui-dist/swagger-ui.css
swagger-ui-bundle.js swagger-ui-dist/swagger-ui-bundle.js
swagger-ui-standalone-preset.js swagger-ui-dist/swagger-ui-standalone-preset.js
favicon-16x16.png swagger-ui-dist/favicon-16x16.png
favicon-32x32.png swagger-ui-dist/favicon-32x32.png
"

want="$(cat "$ui/package-lock.json" "$ui/install-assets.sh" | sha256sum | cut -d" " -f1)"
complete() {
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] || return 1
    echo "$FILES" | while read -r name _; do
        [ -z "$name" ] || [ -s "$vendor/$name" ] || return 1
    done
}
complete && exit 0

if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "npm is missing: install Node.js and npm (Debian: 'npm')" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi

# --ignore-scripts: we take files, never run a package's code. The bundles are for the
# browser: the Node.js version wanted by some packages' "engines" (their own tooling)
# does not matter here, so its warnings are not shown (errors are).
(cd "$ui" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)

rm -rf "$vendor"
mkdir -p "$vendor"
echo "$FILES" | while read -r name source; do
    [ -z "$name" ] && continue
    cp "$ui/node_modules/$source" "$vendor/$name"
    case "$name" in
    *.js | *.css) gzip -9 -n -k "$vendor/$name" ;; # sent to browsers that accept gzip
    esac
done
echo "$want" >"$stamp"
echo "console assets installed in api/console/static/vendor/"
