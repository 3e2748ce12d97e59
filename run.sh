#!/usr/bin/env bash
# TaI-DPT runs, CoOp style.
#
#   bash run.sh demo                 offline miniature world (no download, 2-core CPU, < 10 min)
#   DATA=/path/to/datasets bash run.sh voc2007|coco|nuswide [CFG] [SEEDS]
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

usage() {
  echo "usage: bash run.sh {demo|voc2007|coco|nuswide} [CFG] [SEEDS]   (real datasets need DATA=/path/to/datasets)" >&2
}

target=${1:-}
case "$target" in
  demo)
    exec "$PY" -m taidpt.demo --out "${OUT:-output/demo}" ${DEMO_ARGS:-} ;;
  voc2007|voc) DATASET=voc2007 ;;
  coco|coco2014) DATASET=coco2014 ;;
  nuswide|nus-wide) DATASET=nuswide ;;
  -h|--help) usage; exit 0 ;;
  *) usage; exit 2 ;;
esac

CFG=${2:-rn50_${DATASET}}
SEEDS=${3:-${SEEDS:-1 2 3}}
if [ -z "${DATA:-}" ]; then
  echo "error: set DATA to the folder holding the datasets, e.g. DATA=~/datasets bash run.sh $target" >&2
  echo "       expected layout: see 'Datasets' in README.md" >&2
  exit 2
fi
case "$DATASET" in
  voc2007) need=("$DATA/VOCdevkit/VOC2007/ImageSets/Main/test.txt" "$DATA/COCO/annotations/captions_train2017.json") ;;
  coco2014) need=("$DATA/COCO/annotations/instances_val2014.json" "$DATA/COCO/annotations/captions_train2017.json") ;;
  nuswide) need=("$DATA/NUSWIDE/Concepts81.txt" "$DATA/OpenImages/captions/open_images_train_v6_captions.jsonl") ;;
esac
for f in "${need[@]}"; do
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
