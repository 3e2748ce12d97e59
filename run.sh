#!/usr/bin/env bash
# TaI-DPT runs, CoOp style.
#
#   bash run.sh demo                 offline miniature world (no download, 2-core CPU, < 10 min)
#   bash run.sh app                  the tagging page on the demo's model (http://127.0.0.1:7860/)
#   DATA=/path/to/datasets bash run.sh DATASET [CFG] [SEEDS]
#
# The datasets (and the files each needs under DATA) come from their specs in
# taidpt/images/registry.py, through `python -m taidpt.images.datasets_cli --run-sh-table`;
# `bash run.sh --help` lists them.
#
# For a real dataset it evaluates the zero-shot baseline once, then trains and evaluates
# TaI-DPT for each seed (default "1 2 3"), skipping runs that already have results.json, and
# prints mean ± std over the seeds. CFG defaults to rn50_<dataset>. Extra config overrides can
# be passed in the OPTS environment variable, e.g. OPTS="DATASET.EXCLUDE_TEST_CAPTIONS True";
# OUTPUT_ROOT (default output/) sets where runs go: $OUTPUT_ROOT/<dataset>/TaIDPT/<CFG>/seed<N>.
set -euo pipefail
cd "$(dirname "$0")"

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi

target=${1:-}
if [ "$target" = demo ]; then
  exec "$PY" -m taidpt.demo --out "${OUT:-output/demo}" ${DEMO_ARGS:-}
fi
if [ "$target" = app ]; then
  # the tagging page on the demo's model (made when missing); APP_ARGS go to python -m taidpt.app
  exec "$PY" -m taidpt.demo.app_model --out "${OUT:-output/demo}" -- ${APP_ARGS:-}
fi

# One row per dataset: config <TAB> name,name,... <TAB> the files it needs under DATA.
table=$("$PY" -m taidpt.images.datasets_cli --run-sh-table)
shown=()
DATASET=""
need=()
while IFS=$'\t' read -r -a row; do
  [ "${#row[@]}" -ge 2 ] || continue
  IFS=, read -r -a names <<< "${row[1]}"
  shown+=("${names[0]}")
  for name in "${names[@]}"; do
    if [ "$name" = "$target" ]; then DATASET=${row[0]}; need=("${row[@]:2}"); fi
  done
done <<< "$table"

usage() {
  local IFS='|'
  echo "usage: bash run.sh {demo|app|${shown[*]}} [CFG] [SEEDS]   (real datasets need DATA=/path/to/datasets)" >&2
}

case "$target" in
  -h|--help) usage; exit 0 ;;
esac
if [ -z "$DATASET" ]; then usage; exit 2; fi

CFG=${2:-rn50_${DATASET}}
SEEDS=${3:-${SEEDS:-1 2 3}}
if [ -z "${DATA:-}" ]; then
  echo "error: set DATA to the folder holding the datasets, e.g. DATA=~/datasets bash run.sh $target" >&2
  echo "       expected layout: see 'Datasets' in README.md" >&2
  exit 2
fi
for f in "${need[@]}"; do
  f=$DATA/$f
  if [ ! -e "$f" ]; then
    echo "error: $f is missing: $DATASET needs it under DATA=$DATA (see 'Datasets' in README.md)" >&2
    exit 2
  fi
done

OUTDIR=${OUTPUT_ROOT:-output}/$DATASET
common=(--root "$DATA" --dataset-config-file "configs/datasets/$DATASET.yaml")

zs=$OUTDIR/ZeroshotCLIPDense/rn50
if [ -f "$zs/results.json" ]; then echo "zero-shot results exist in $zs, skipping"
else
  "$PY" train.py --trainer ZeroshotCLIPDense "${common[@]}" \
    --config-file configs/trainers/ZeroshotCLIPDense/rn50.yaml --output-dir "$zs" ${OPTS:-}
fi

for SEED in $SEEDS; do
  dir=$OUTDIR/TaIDPT/$CFG/seed$SEED
  if [ -f "$dir/results.json" ]; then echo "results exist in $dir, skipping"; continue; fi
  "$PY" train.py --trainer TaIDPT "${common[@]}" --config-file "configs/trainers/TaIDPT/$CFG.yaml" \
    --output-dir "$dir" --seed "$SEED" ${OPTS:-}
done

"$PY" -m taidpt.evaluation.summarize "$zs" "$OUTDIR/TaIDPT/$CFG"
