#!/usr/bin/env bash
# Fetch the book's browser assets from the npm registry so built pages need no network:
# MathJax 3 (maths), RequireJS and @jupyter-widgets/html-manager (widgets). They land in book/_vendor/
# (git-ignored; _config.yml's html_static_path copies it into _build/html/_static/). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=book/_vendor
stamp="$dest/.complete"
packages="mathjax@3.2.2 requirejs@2.3.8 @jupyter-widgets/html-manager@1.0.15"
layout=3  # bump when the folder layout below changes
if [[ -f "$stamp" && "$(cat "$stamp")" == "$layout $packages" ]]; then
  exit 0
fi
command -v npm >/dev/null || { echo "vendor_assets: npm is needed (apt-get install -y npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent $packages >/dev/null)
for tgz in "$tmp"/*.tgz; do
  mkdir -p "${tgz%.tgz}" && tar xzf "$tgz" -C "${tgz%.tgz}"
done
rm -rf "$dest" && mkdir -p "$dest/mathjax" "$dest/requirejs" "$dest/@jupyter-widgets/html-manager/dist"
mj="$tmp/mathjax-3.2.2/package/es5"
cp "$mj/tex-mml-chtml.js" "$dest/mathjax/"
cp -r "$mj/input" "$mj/output" "$mj/ui" "$mj/a11y" "$mj/sre" "$mj/adaptors" "$dest/mathjax/"
cp "$tmp/requirejs-2.3.8/package/require.js" "$dest/requirejs/"
find "$tmp/jupyter-widgets-html-manager-1.0.15/package/dist" -maxdepth 1 -type f ! -name '*.map' ! -name 'embed.js*' \
  -exec cp {} "$dest/@jupyter-widgets/html-manager/dist/" \;
# the widget manager loads its icon fonts (FontAwesome, for the controls' glyphs) from its public path,
# _static/@jupyter-widgets/, not from dist/: without them a page with such a control logs 404s
find "$tmp/jupyter-widgets-html-manager-1.0.15/package/dist" -maxdepth 1 -type f \
  \( -name '*.woff2' -o -name '*.woff' -o -name '*.ttf' -o -name '*.eot' -o -name '*.svg' \) \
  -exec cp {} "$dest/@jupyter-widgets/" \;
echo "$layout $packages" > "$stamp"
echo "vendor_assets: $(du -sh "$dest" | cut -f1) in $dest"
