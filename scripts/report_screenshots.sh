#!/usr/bin/env bash
# Screenshots (1280 px wide, headless Chromium) of the report's front page and of every HTML item it shows.
# Usage: bash scripts/report_screenshots.sh RESULTS_DIR OUT_DIR   (after `snakemake --report RESULTS_DIR/report.html`)
set -euo pipefail
results=$1 out=$2
mkdir -p "$out"
shot() {  # $1 page, $2 png name, $3 height
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,"$3" \
        --virtual-time-budget=5000 --screenshot="$out/$2" "file://$(realpath "$1")" >/dev/null 2>&1
    echo "$out/$2"
}
shot "$results/report.html" report_front.png 1100
for page in "$results"/studies/*/summary.html "$results"/studies/*/ttests.html "$results"/qc/preproc_qc.html; do
    name=$(basename "$(dirname "$page")")_$(basename "$page" .html)
    shot "$page" "report_${name}.png" 900
done
