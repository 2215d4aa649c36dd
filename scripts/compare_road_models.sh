#!/usr/bin/env bash
# Equal wall-clock comparison of road networks (the road-model issue's model choice):
#   scripts/compare_road_models.sh [MINUTES] [MODEL ...]     # default: 20 ddrnet23_slim dlinknet34
# Each model trains FROM SCRATCH with the road recipe (resources/configs/road_model_train.yaml,
# 0.5 m corpus) for the same number of wall-clock minutes, all at once, each pinned to its own
# CPU core (taskset), so each gets the same compute; a STOP file then ends every run cleanly
# (last.ckpt). The learning rate stays at the recipe's peak (the schedule is stretched over 1000
# epochs) since no run knows its length in steps. Validation is left to the end: every last.ckpt
# is scored by `python -m app.service.demo_data evaluate` (corpus validation bands per source,
# DeepGlobe 388, APLS on the Paris tile and the demo scene), again one core each.
# Outputs: runs/compare/<model>/ (run folders, logs), runs/compare/<model>.eval.txt, and a
# summary table on stdout. Needs ../shared/data and the corpus at 0.5 m (scripts/build_road_model.sh
# or `make quality` assemble it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
MINUTES=${1:-20}
shift || true
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(ddrnet23_slim dlinknet34)
RECIPE=resources/configs/road_model_train.yaml
OUT=${OUT:-runs/compare}
GSD=$("$PYTHON" -c "import yaml; print(yaml.safe_load(open('$RECIPE'))['gsd_m'])")
CORPUS=${CORPUS:-$("$PYTHON" -c "from app.service.demo_data import default_corpus_dir as d; print(d($GSD))")}
[ -f "$CORPUS/manifest.json" ] || { echo "compare_road_models: no corpus at $CORPUS" >&2; exit 2; }
NCPU=$(nproc)
export GLOG_v=${GLOG_v:-3}
mkdir -p "$OUT"

pids=()
for i in "${!MODELS[@]}"; do
    m=${MODELS[$i]}
    taskset -c $((i % NCPU)) "$PYTHON" -m app.cli train --config "$RECIPE" --data "$CORPUS" \
        --out "$OUT/$m" --set "model=$m" --set val_every=100000 --epochs 1000 --overwrite \
        > "$OUT/$m.log" 2>&1 &
    pids+=($!)
done
echo "training ${MODELS[*]} for $MINUTES min (logs in $OUT/)"
sleep $((MINUTES * 60))
for m in "${MODELS[@]}"; do touch "$OUT/$m/STOP"; done
for p in "${pids[@]}"; do wait "$p" || true; done

pids=()
for i in "${!MODELS[@]}"; do
    m=${MODELS[$i]}
    taskset -c $((i % NCPU)) "$PYTHON" -m app.service.demo_data evaluate "$OUT/$m/last.ckpt" \
        --corpus "$CORPUS" --work "$OUT/$m.eval_work" > "$OUT/$m.eval.txt" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done

"$PYTHON" - "$OUT" "${MODELS[@]}" <<'PY'
import json, sys
from pathlib import Path
out, models = Path(sys.argv[1]), sys.argv[2:]
print("| model | steps in budget | mean val IoU over sources | "
      "DeepGlobe 388 recall | Paris F1 / APLS | demo F1 / APLS |")
print("|---|---|---|---|---|---|")
for m in models:
    state = json.loads((out / m / "train_state.json").read_text())
    text = (out / f"{m}.eval.txt").read_text()
    s = json.loads(text[text.index("{"):text.index("\n}\n") + 2])
    val = [v["iou"] for k, v in s.items() if k.startswith("corpus_val/")]
    p, d = s["paris_img1447"], s["vegas_img0"]
    print(f"| {m} | {state['global_step']} | {sum(val) / len(val):.3f} | "
          f"{s['deepglobe_388']['recall']:.3f} | {p['f1']:.3f} / {p['apls']:.3f} | "
          f"{d['f1']:.3f} / {d['apls']:.3f} |")
PY
