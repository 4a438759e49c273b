#!/usr/bin/env bash
# Reproduce the vendored Plotly partial bundle from its npm package (the flow and comparisons views load it).
#   bash static/vendor/plotly/update.sh [VERSION]
set -euo pipefail
cd "$(dirname "$0")"
VERSION=${1:-4.1.1}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "plotly.js-basic-dist-min@$VERSION" >/dev/null && tar xzf plotly.js-basic-dist-min-*.tgz)
cp "$tmp/package/plotly-basic.min.js" "$tmp/package/LICENSE" .
echo "plotly.js-basic-dist-min $VERSION (npm), plotly-basic.min.js unchanged; MIT licence in LICENSE" > VERSION
sha256sum plotly-basic.min.js
