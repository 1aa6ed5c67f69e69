#!/usr/bin/env bash
# Rebuilds .dvc/plots/offline.html: DVC's plot page (dvc-render's PAGE_HTML) with vega, vega-lite and
# vega-embed inlined, so `dvc plots show` / `dvc plots diff` draw with no network. .dvc/config points
# DVC at it (plots.html_template). The versions are the ones dvc-render 1.0.2 loads from the CDN
# (dvc_render/vega.py); the tarballs come from the npm registry (`npm pack`) and are checked by sha256.
# Usage: tools/vega_template.sh [OUTPUT]   (default .dvc/plots/offline.html; needs npm, tar, sha256sum)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.dvc/plots/offline.html}

pkgs=(vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2)
sums='d77deab01d6104b1239228720721f93003e60797d2faced7ffdd759fa70f989d  vega-5.20.2.tgz
f64ca4745f043447ac86b67dc9e9592ec2b85ac8b8dafc35faf970f142463e4b  vega-lite-5.2.0.tgz
93aeee312e92077b0252ef026c0fe0ec8fa430c19825aeada6cd3a6804e68e1b  vega-embed-6.18.2.tgz'

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "${pkgs[@]}" >/dev/null && sha256sum --quiet -c - <<<"$sums")

# The file each package's "jsdelivr" field names, i.e. what the CDN tags load; without the source-map line.
js() {  # js TARBALL FILE
    tar -xzOf "$tmp/$1" "package/$2" | sed '/^\/\/# sourceMappingURL=/d'
}
js vega-5.20.2.tgz build/vega.min.js > "$tmp/vega.js"
js vega-lite-5.2.0.tgz build/vega-lite.min.js > "$tmp/vega-lite.js"
js vega-embed-6.18.2.tgz build/vega-embed.min.js > "$tmp/vega-embed.js"
# dvc-render fills the page by plain string replacement of {scripts}, {plot_divs} and {refresh_tag}, and
# a "</script" inside the JS would end the script element early: refuse either.
if grep -l -i -E '</script|\{(scripts|plot_divs|refresh_tag)\}' "$tmp"/*.js; then
    echo "vega_template.sh: the JS above holds </script or a dvc-render placeholder" >&2
    exit 1
fi

mkdir -p "$(dirname "$out")"
{
    cat <<'HTML'
<!DOCTYPE html>
<!--
  DVC plots page for use with no network (.dvc/config: plots.html_template = plots/offline.html).
  dvc-render's default page with its CDN script tags replaced by the same files, inlined:
    vega 5.20.2        build/vega.min.js        BSD-3-Clause, (c) University of Washington Interactive Data Lab
    vega-lite 5.2.0    build/vega-lite.min.js   BSD-3-Clause, (c) University of Washington Interactive Data Lab
    vega-embed 6.18.2  build/vega-embed.min.js  BSD-3-Clause, (c) University of Washington Interactive Data Lab
  (the bundles carry code of their dependencies, e.g. d3 (ISC), under those packages' own licences;
  see each package's LICENSE on npm). Built from the npm tarballs by tools/vega_template.sh; do not
  edit by hand. It has no scripts placeholder, so dvc-render's CDN tags are dropped.
-->
<html>
<head>
    {refresh_tag}
    <title>DVC Plot</title>
HTML
    for f in vega vega-lite vega-embed; do
        printf '    <script type="text/javascript">\n'
        cat "$tmp/$f.js"
        printf '\n    </script>\n'
    done
    cat <<'HTML'
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
HTML
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(wc -c < "$out") bytes)"
