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
#    spread), fp32 as the study ran them. (On a GPU amp=auto is bf16: pass amp=off for fp32 rows.)
cifarlab study --out "$out" --only vgg1,vgg2,vgg3:3,dropout,weight_decay,augmentation --workers 2 "$@"
# 2. can bf16 stand in for fp32? The baseline's three seeds in bf16, in a folder of their own (amp is a
#    study setting); `cifarlab compare OUT/runs/vgg3/seed* OUT-bf16/runs/vgg3/seed* --within 1` gives the
#    verdict. Measured: equivalent (README, Arithmetic), so where the CPU or GPU computes bf16 natively
#    3. the headline, combined at its 400 epochs, and 4. the BN/Dropout ablations run in bf16 there too;
#    elsewhere they run in fp32 beside step 1. combined and the 100-epoch ablations are one call: on two
#    workers the longest run (combined) starts first and the ablations follow one another on the other
#    worker (as two calls, the other worker would idle through combined's hours).
if python3 -c "import sys, torch; from cifarlab.train import native_bf16, pick_device
sys.exit(0 if native_bf16(pick_device('auto')) else 1)"; then
    rest=("$out-bf16" amp=native)
    first=vgg3:3,combined,bn_only,dropout_only,bn_dropout_swapped
else
    echo "no native bf16 here: step 2 (vgg3 in bf16) is left for a machine that has it; the rest runs in fp32" >&2
    rest=("$out")
    first=combined,bn_only,dropout_only,bn_dropout_swapped
fi
cifarlab study --out "${rest[0]}" --only "$first" --workers 2 "$@" "${rest[@]:1}"
# 4. then the 200-epoch dropout rows
cifarlab study --out "${rest[0]}" --only increasing_dropout,dropout_augmentation --workers 2 "$@" "${rest[@]:1}"
