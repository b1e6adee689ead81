#!/usr/bin/env bash
# Retrain one shipped child from scratch and rebuild its files in child_models/:
# generate the data, train, export + sign, measure on the held-out sets, write the model card.
#
#   scripts/train_child.sh home|calc|mother|fortunes
#
# Environment:
#   BULLET_RUNS     run and data folder (default: runs/, ignored by git); checkpoints go there
#   BULLET_KEY      Ed25519 private key to sign with (default: unsigned; fortunes needs it)
#   BULLET_HOME     home YAML the home evaluation refers to (default: examples/home.yaml)
#   BULLET_CORPORA  folder with marathi.jsonl and fortunes_en.jsonl (the mother's text children,
#                   and the fortunes child's corpus)
#   STEPS           override the config's step count
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/train_child.sh home|calc|mother|fortunes}
runs=$(realpath -m "${BULLET_RUNS:-runs}")
data=$runs/data
homecfg=${BULLET_HOME:-examples/home.yaml}
key=${BULLET_KEY:+--key $BULLET_KEY}
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p "$data"

case "$name" in
home)
  bullet-train agentdata home --split train --n 150000 --seed 1 --for-training -o "$data/home_train.jsonl"
  bullet-train agentdata home --split test --home "$homecfg" --n 2000 --seed 7 -o "$data/home_test.jsonl"
  bullet-train agentdata home --split test --n 1000 --seed 9 -o "$data/home_test_random.jsonl"
  bullet-train agentdata home --split train --home "$homecfg" --n 1000 --seed 8 -o "$data/home_traindist.jsonl"
  bullet-train agentdata home --random-home 9 -o "$data/random_home.yaml"      # a home no child has seen
  bullet-train agentdata home --split test --home "$data/random_home.yaml" --n 1000 --seed 9 -o "$data/home_test_rhome.jsonl"
  ;;
calc)
  bullet-train agentdata calc --split train --n 150000 --seed 1 --for-training -o "$data/calc_train.jsonl"
  bullet-train agentdata calc --split test --n 2000 --seed 7 -o "$data/calc_test.jsonl"
  bullet-train agentdata calc --split train --n 1000 --seed 8 -o "$data/calc_traindist.jsonl"
  ;;
mother)
  corpora=${BULLET_CORPORA:?set BULLET_CORPORA to the folder holding marathi.jsonl and fortunes_en.jsonl}
  src=(--source "marathi=$corpora/marathi.jsonl" --source "fortunes=$corpora/fortunes_en.jsonl")
  bullet-train agentdata routing --split train --n 60000 --seed 1 "${src[@]}" --for-training -o "$data/routing_train.jsonl"
  bullet-train agentdata routing --split dev --n 3000 --seed 3 "${src[@]}" -o "$data/routing_dev.jsonl"
  bullet-train agentdata routing --split test --n 3000 --seed 7 "${src[@]}" -o "$data/routing_test.jsonl"
  # the agent children's held-out sets, to measure how many of their lines the mother routes to them
  bullet-train agentdata home --split test --home "$homecfg" --n 2000 --seed 7 -o "$data/routing_home.jsonl"
  bullet-train agentdata calc --split test --n 2000 --seed 7 -o "$data/routing_calc.jsonl"
  python -m trainer.agentdata.ship mother --labelled "$data/routing_train.jsonl" --data "$data" --home "$homecfg" \
    $key --out child_models
  exit 0
  ;;
fortunes)
  # a text child: trained on the corpus itself, the checkpoint of the lowest validation loss
  # (keep_best) shipped and measured on the run's validation split
  corpora=${BULLET_CORPORA:?set BULLET_CORPORA to the folder holding fortunes_en.jsonl}
  release=${BULLET_KEY:?set BULLET_KEY to the release key: trainer.ship signs the child}
  rm -rf "${runs:?}/fortunes"
  bullet-train train --config trainer/configs/fortunes.yaml --no-progress ${STEPS:+--steps $STEPS} \
    --set "dataset_path=$corpora/fortunes_en.jsonl" --set "output_dir=$runs/fortunes"
  python -m trainer.ship --key "$release" --out child_models --no-mother --child "fortunes=$runs/fortunes/best" \
    --config fortunes=trainer/configs/fortunes.yaml --eval fortunes=eval/fortunes_prompts.jsonl --golden-prompt fortunes=The
  exit 0
  ;;
*) echo "unknown child $name (home, calc, mother, fortunes)" >&2; exit 2 ;;
esac

rm -rf "${runs:?}/$name"
bullet-train train --config "trainer/configs/$name.yaml" --no-progress ${STEPS:+--steps $STEPS} \
  --set "dataset_path=$data/${name}_train.jsonl" --set "output_dir=$runs/$name"
python -m trainer.agentdata.ship "$name" --run "$runs/$name" --data "$data" --home "$homecfg" $key --out child_models
