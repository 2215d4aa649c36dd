#!/usr/bin/env bash
# Retake the README's main-window screenshot as a real run of the bundled default model:
# the app in a real X window (Xvfb), the demo scene opened, F5 (Extract roads) pressed with
# xdotool, and the screen grabbed once the extraction has finished.
#   scripts/screenshots.sh [OUT.png]     (default docs/screenshots/main_window_extracted.png)
# Needs Xvfb, xdotool and ImageMagick's `import` (Debian: xvfb xdotool imagemagick).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/screenshots/main_window_extracted.png}
SCENE=${SCENE:-resources/sample/RGB-PanSharpen_AOI_2_Vegas_img0.tif}
DISPLAY_NUM=${DISPLAY_NUM:-:57}
WORK=$(mktemp -d)
trap 'kill $GUI $XVFB 2>/dev/null || true; rm -rf "$WORK"' EXIT
Xvfb "$DISPLAY_NUM" -screen 0 1500x980x24 -nolisten tcp >/dev/null 2>&1 &
XVFB=$!
sleep 2
export DISPLAY=$DISPLAY_NUM
unset QT_QPA_PLATFORM
# a fresh settings file: the default model, extraction output in the work folder
mkdir -p "$WORK/out"
printf '[workspace]\ndir=%s\n' "$WORK/out" > "$WORK/settings.ini"
.venv/bin/roadseg-gui "$SCENE" --settings "$WORK/settings.ini" >"$WORK/gui.log" 2>&1 &
GUI=$!
WIN=""
for _ in $(seq 60); do
    WIN=$(xdotool search --onlyvisible --name "RoadSeg Studio" 2>/dev/null | head -1 || true)
    [ -n "$WIN" ] && break
    sleep 1
done
[ -n "$WIN" ] || { echo "screenshots: no window appeared (log: $WORK/gui.log)" >&2; cat "$WORK/gui.log" >&2; exit 1; }
xdotool windowmove "$WIN" 0 0 windowsize "$WIN" 1500 980
sleep 3
xdotool windowfocus --sync "$WIN"
xdotool key --clearmodifiers F5
# finished when the extraction wrote its summary (the GUI then draws the network)
for _ in $(seq 300); do
    [ -n "$(find "$WORK/out" -name '*summary*.json' 2>/dev/null | head -1)" ] && break
    if grep -q "Extraction failed" "$WORK/gui.log"; then
        echo "screenshots: the extraction failed:" >&2; grep "Extraction failed" "$WORK/gui.log" >&2
        exit 1
    fi
    sleep 1
done
sleep 4
mkdir -p "$(dirname "$OUT")"
import -window root "$OUT.tmp.png"
mv "$OUT.tmp.png" "$OUT"
echo "$OUT"
