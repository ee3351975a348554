#!/usr/bin/env bash
# The study at its own protocol: the presets as they are, full training set, the test set
# measured as the study measured it. Hours to days on a CPU (`cifarlab study --plan` with
# the same options says how long here). Resumable: after any interruption run the same
# command again; finished runs are skipped, interrupted ones continue from their last epoch.
#
#   bash scripts/protocol_study.sh [STUDY_DIR] [--data PATH]
#
# Run it from a checkout pinned at one commit (a `git worktree` with its own environment),
# so code changes made meanwhile never mix into a running study; every summary.json names
# the commit it was trained with.
set -euo pipefail
out=${1:-studies/protocol}
shift || true
# 1. the article's six experiments at 100 epochs (seed 0; the baseline also seeds 1 and 2, for its
#    spread) and 3. the headline, combined at its 400 epochs, fp32 as the study ran them (bf16 is not
#    admitted until step 2 says so). One invocation: on two workers the longest run (combined) starts
#    first and the short ones run beside it. (On a GPU amp=auto is bf16: pass amp=off for fp32 rows.)
cifarlab study --out "$out" --only vgg1,vgg2,vgg3:3,dropout,weight_decay,augmentation,combined --workers 2 "$@"
# 2. can bf16 stand in for fp32? The baseline's three seeds in bf16, in a folder of their own
#    (amp is a study setting), only where the CPU or GPU computes bf16 natively; then
#    `cifarlab compare OUT/runs/vgg3/seed* OUT-bf16/runs/vgg3/seed*` gives the verdict.
if python3 -c "import sys, torch; from cifarlab.train import native_bf16, pick_device
sys.exit(0 if native_bf16(pick_device('auto')) else 1)"; then
    cifarlab study --out "$out-bf16" --only vgg3 --seeds 3 --workers 2 "$@" amp=native
else
    echo "no native bf16 here: step 2 (vgg3 in bf16) is left for a machine that has it" >&2
fi
# 4. the BN/Dropout ablations at 100 epochs, then the 200-epoch dropout rows
cifarlab study --out "$out" --only bn_only,dropout_only,bn_dropout_swapped --seeds 1 --workers 2 "$@"
cifarlab study --out "$out" --only increasing_dropout,dropout_augmentation --seeds 1 --workers 2 "$@"
