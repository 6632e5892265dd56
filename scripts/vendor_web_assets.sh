#!/usr/bin/env bash
# Refresh the self-hosted JavaScript of the book (book/_static/widgets and book/_static/mathjax) from the npm
# registry, by package name, so that rendered pages draw their widgets and mathematics offline.
# Usage: scripts/vendor_web_assets.sh [HTML_MANAGER_VERSION] [REQUIREJS_VERSION] [MATHJAX_VERSION]
set -euo pipefail
hm=${1:-1.0.15}
rq=${2:-2.3.7}
mj=${3:-3.2.2}
static=$(cd "$(dirname "$0")/.." && pwd)/book/_static
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "@jupyter-widgets/html-manager@$hm" "requirejs@$rq" "mathjax@$mj" >/dev/null
mkdir hm rq mj
tar xzf jupyter-widgets-html-manager-"$hm".tgz -C hm
tar xzf requirejs-"$rq".tgz -C rq
tar xzf mathjax-"$mj".tgz -C mj

find "$static/widgets" -type f ! -name README.md -delete
cp hm/package/dist/embed-amd.js hm/package/dist/*.{woff2,woff,ttf,eot,svg} "$static/widgets/"
cp rq/package/require.js "$static/widgets/"

rm -rf "$static/mathjax"
mkdir -p "$static/mathjax/output/chtml/fonts" "$static/mathjax/input/tex"
cp mj/package/es5/tex-chtml.js "$static/mathjax/"
cp -r mj/package/es5/output/chtml/fonts/woff-v2 "$static/mathjax/output/chtml/fonts/"
cp -r mj/package/es5/input/tex/extensions "$static/mathjax/input/tex/"
cp -r mj/package/es5/ui "$static/mathjax/"
echo "refreshed: html-manager $hm, requirejs $rq, mathjax $mj (update book/_static/widgets/README.md)"
