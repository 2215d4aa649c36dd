#!/usr/bin/env bash
# Train the road model further and package it as the bundled model, in one command:
#   scripts/build_road_model.sh             # from the project root
# 1. the multi-source corpus at the recipe's GSD (resources/datasets/roads_corpus.yaml), written
#    OUTSIDE the project (the sources are research / non-commercial);
# 2. `roadseg train` with resources/configs/road_model_train.yaml, starting from INIT (default:
#    the bundled weights, so each run is one more stage); resumable: RESUME=1 continues RUN_DIR;
# 3. evaluation on held-out data and packaging into resources/models/road_demo.{ckpt,json},
#    with this stage appended to the sidecar's provenance.
# Environment: ROADSEG_SHARED_DATA (default ../shared/data), RUN_DIR (default
# runs/road_model_05m), INIT, RESUME, PYTHON / ROADSEG (default the .venv ones).
# CPU: about 90 minutes for the recipe's 2,000 steps on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
ROADSEG=${ROADSEG:-.venv/bin/roadseg}
DATA=${ROADSEG_SHARED_DATA:-../shared/data}
RECIPE=resources/configs/road_model_train.yaml
RUN_DIR=${RUN_DIR:-runs/road_model_05m}
INIT=${INIT:-resources/models/road_demo.ckpt}
export GLOG_v=${GLOG_v:-3}
GSD=$("$PYTHON" -c "import yaml; print(yaml.safe_load(open('$RECIPE'))['gsd_m'])")
CORPUS=$("$PYTHON" -c "from app.service.demo_data import default_corpus_dir as d; print(d($GSD))")

"$ROADSEG" dataset assemble resources/datasets/roads_corpus.yaml --data "$DATA" --gsd "$GSD" \
    --out "$CORPUS" --overwrite
if [ "${RESUME:-0}" = 1 ]; then
    "$ROADSEG" train --config "$RECIPE" --data "$CORPUS" --out "$RUN_DIR" --resume
else
    # keep the starting weights: INIT may be the bundled file that step 3 replaces
    mkdir -p "$(dirname "$RUN_DIR")"
    cp "$INIT" "$RUN_DIR.init.ckpt"
    cp "${INIT%.ckpt}.json" "$RUN_DIR.init.json"
    "$ROADSEG" train --config "$RECIPE" --data "$CORPUS" --out "$RUN_DIR" \
        --init-checkpoint "$RUN_DIR.init.ckpt" --overwrite
fi
STAGE=$("$PYTHON" - "$RUN_DIR" "$INIT" "$RECIPE" "$GSD" <<'PY'
import json, subprocess, sys
run, init, recipe, gsd = sys.argv[1:]
state = json.load(open(f"{run}/train_state.json"))
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                     text=True).stdout.strip()
print(json.dumps({"stage": "roadseg train", "recipe": recipe, "gsd_m": float(gsd),
                  "init_checkpoint": init, "steps": state.get("global_step"),
                  "best_epoch": state.get("best_epoch"), "best_val_iou": state.get("best_metric"),
                  "code": rev}))
PY
)
# the run's sidecar has no provenance: the starting weights' copy supplies the earlier stages
"$PYTHON" -m app.service.demo_data package "$RUN_DIR/best.ckpt" --data "$DATA" \
    --corpus "$CORPUS" --stage "$STAGE" --parent "$RUN_DIR.init.ckpt"
