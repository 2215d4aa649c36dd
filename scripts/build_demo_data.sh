#!/usr/bin/env bash
# Rebuild the bundled demo road model (resources/models/road_demo.ckpt + .json) in one command:
#   scripts/build_demo_data.sh            # from the project root, with the venv's python/roadseg
# 1. training chips from the labelled reference data, written OUTSIDE the project (DeepGlobe is
#    research / non-commercial only and must not be copied into the repository);
# 2. `roadseg train` with the committed recipe resources/configs/road_demo_train.yaml;
# 3. evaluation on held-out data and packaging (metrics written into the .json sidecar).
# Environment: ROADSEG_SHARED_DATA (default ../shared/data), RUN_DIR (default runs/road_demo),
# PYTHON / ROADSEG (default the .venv ones). CPU, about 20-60 minutes on 2 busy cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
ROADSEG=${ROADSEG:-.venv/bin/roadseg}
DATA=${ROADSEG_SHARED_DATA:-../shared/data}
CHIPS=${XDG_CACHE_HOME:-$HOME/.cache}/roadseg/demo_chips
RUN_DIR=${RUN_DIR:-runs/road_demo}
export GLOG_v=${GLOG_v:-3}

"$PYTHON" -m app.service.demo_data chips --data "$DATA" --out "$CHIPS" --overwrite
"$ROADSEG" train --config resources/configs/road_demo_train.yaml --data "$CHIPS" \
    --out "$RUN_DIR" --overwrite
"$PYTHON" -m app.service.demo_data package "$RUN_DIR/best.ckpt" --data "$DATA" --out "$CHIPS"
