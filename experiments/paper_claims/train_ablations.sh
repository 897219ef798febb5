#!/usr/bin/env bash
# Trains the extra models of T1 and T5 with equal wall-clock budgets. The variants of one study
# train at the same time (one process each), so they share the machine equally whatever else runs.
# Needs `make data` and runs/ldm_demo/latents (the demo latent cache, reused by T5).
#   bash experiments/paper_claims/train_ablations.sh [AE_MINUTES] [LDM_MINUTES]
set -euo pipefail
AE_MIN=${1:-15}
LDM_MIN=${2:-14}
PY=${PYTHON:-.venv/bin/python}
mkdir -p runs/logs
# T1: the demo autoencoder at 2x less (64 latent channels), equal (32) and 2x more (16) compression.
for C in 64 32 16; do
  $PY -m bassgen.main --config=configs/autoencoder.py:demo --workdir=runs/t1_c$C \
      --config.model.latent_channels=$C --config.train.max_minutes=$AE_MIN \
      > runs/logs/t1_c$C.log 2>&1 &
done
wait
# T5: the demo diffusion model with Dynamic Positional Bias vs absolute sinusoidal positions.
for POS in dpb sinusoidal; do
  mkdir -p runs/t5_$POS
  [ -e runs/t5_$POS/latents ] || ln -s ../ldm_demo/latents runs/t5_$POS/latents
  $PY -m bassgen.main --config=configs/ldm.py:demo --workdir=runs/t5_$POS \
      --config.model.position=$POS --config.train.max_minutes=$LDM_MIN \
      > runs/logs/t5_$POS.log 2>&1 &
done
wait
