#!/bin/bash
# Road extraction on an Ascend 310, from a GeoTIFF (or a folder of images) to a mask GeoTIFF and
# road vectors.
#
#   bash run_infer_310.sh IMAGE_DIR_OR_GEOTIFF MODEL DEVICE_ID [WORK_DIR]
#
# MODEL is a MindIR exported by `roadseg export --format mindir` (its .json metadata beside it
# gives bands, normalisation, tile size and classes). Steps: preprocess.py (tiles -> .bin) ->
# roadseg_310 on the device -> postprocess.py (mosaic, mask GeoTIFF, vectors, metrics).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash run_infer_310.sh IMAGE_DIR_OR_GEOTIFF MODEL DEVICE_ID [WORK_DIR]" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
input=$(realpath "$1"); model=$(realpath "$2"); device_id=$3
work=$(realpath -m "${4:-./infer_310_work}")
[ -e "$input" ] || { echo "$input: no such file or directory" >&2; exit 2; }
[ -f "$model" ] || { echo "$model: model not found" >&2; exit 2; }
case "$device_id" in ''|*[!0-9]*) echo "DEVICE_ID must be a number, got '$device_id'" >&2; exit 2;; esac

if [ -d "${ASCEND_HOME:-/usr/local/Ascend}/ascend-toolkit/latest" ]; then
  export ASCEND_HOME=${ASCEND_HOME:-/usr/local/Ascend}
  export PATH=$ASCEND_HOME/ascend-toolkit/latest/compiler/bin:$PATH
  export LD_LIBRARY_PATH=$ASCEND_HOME/ascend-toolkit/latest/lib64:${LD_LIBRARY_PATH:-}
  export ASCEND_OPP_PATH=$ASCEND_HOME/ascend-toolkit/latest/opp
fi

[ -x "$here/build/roadseg_310" ] || bash "$here/build.sh"
[ -x "$here/build/roadseg_310" ] || { echo "roadseg_310 could not be built (see build.sh)" >&2; exit 1; }

rm -rf "$work/tiles" "$work/result"
python3 "$here/preprocess.py" "$input" --model "$model" --out "$work"
"$here/build/roadseg_310" --mindir_path="$model" --input_path="$work/tiles" \
  --result_path="$work/result" --device_id="$device_id"
python3 "$here/postprocess.py" "$work" --out "$work/output"
echo "outputs in $work/output"
