#!/bin/sh
# Vendors the console's front-end files from the npm registry, by package name and exact
# version, with their licenses, into api/console/static/vendor/. Nothing is fetched at
# run time and there is no build step: run this only to change a version, then commit.
#   scripts/vendor.sh        (needs npm and the registry)
set -eu
cd "$(dirname "$0")/.."
dest=api/console/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# package@version  files to keep (paths inside the package)
vendor() {
    spec=$1; name=${spec%@*}; shift
    (cd "$work" && npm pack --silent "$spec" >/dev/null)
    tarball=$(ls "$work"/*.tgz)
    mkdir -p "$work/$name" "$dest/$name"
    tar xzf "$tarball" -C "$work/$name"
    rm "$tarball"
    rm -f "$dest/$name"/*
    for file in "$@"; do
        cp "$work/$name/package/$file" "$dest/$name/"
    done
    echo "$spec" > "$dest/$name/VERSION"
}

vendor htmx.org@2.0.11 LICENSE dist/htmx.min.js
vendor uplot@1.6.32 LICENSE dist/uPlot.iife.min.js dist/uPlot.min.css
vendor swagger-ui-dist@5.35.0 LICENSE NOTICE swagger-ui-bundle.js \
    swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png
ls -l "$dest"/*
