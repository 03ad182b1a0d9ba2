#!/usr/bin/env bash
# Screenshots (1280 px wide, headless Chromium) of the report's front page, of each category page and of every
# HTML item it shows. Usage: bash scripts/report_screenshots.sh RESULTS_DIR OUT_DIR
# (after `snakemake --report RESULTS_DIR/report.html`).
set -euo pipefail
results=$1 out=$2
mkdir -p "$out"
shot() {  # $1 page, $2 png name, $3 height
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,"$3" \
        --virtual-time-budget=6000 --screenshot="$out/$2" "file://$(realpath "$1")" >/dev/null 2>&1
    echo "$out/$2"
}
shot "$results/report.html" report_front.png 1100
# A category page: a copy of the report whose app opens that category once rendered.
for category in $(ls "$results/studies" | grep -v -e overview -e provenance -e resources) QC Resources Provenance; do
    page=$(mktemp --suffix=.html)
    python3 - "$results/report.html" "$page" "$category" <<'PY'
import sys
report, page, category = sys.argv[1:]
text = open(report).read().replace(
    "root.render(e(App));",
    "root.render(e(App, {ref: a => { if (a && !window.opened) { window.opened = 1; "
    "setTimeout(() => a.showCategory(%r), 200); } }}));" % category)
open(page, "w").write(text)
PY
    shot "$page" "report_category_${category}.png" 900
    rm -f "$page"
done
for page in "$results"/studies/*/summary.html "$results"/studies/*/ttests.html "$results"/qc/preproc_qc.html; do
    name=$(basename "$(dirname "$page")")_$(basename "$page" .html)
    shot "$page" "report_${name}.png" 900
done
