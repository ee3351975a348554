#!/usr/bin/env bash
# The study at its own protocol: the presets as they are, full training set, the test set
# measured as the study measured it. Hours to days on a CPU (`--plan` says how long here).
# Resumable: after any interruption run the same command again; finished runs are skipped,
# unfinished ones continue from their last epoch.
#
#   bash scripts/protocol_study.sh [STUDY_DIR] [--stop-after DURATION] [--data PATH] [--plan]
#
# Two study folders: STUDY_DIR (fp32) and STUDY_DIR-bf16 (amp=native). --stop-after is one
# budget for the whole script: each study call gets what is left of it, and every run in
# progress stops at the end of its epoch when it is spent (then `cifarlab carry out`).
# Run it from a checkout pinned at one commit (a `git worktree` with its own environment),
# so code changes made meanwhile never mix into a running study; every summary.json names
# the commit it was trained with, and a carried run continues with the commit it began with.
set -euo pipefail
out=${1:-studies/protocol}
shift || true
args=() stop=""
while [ $# -gt 0 ]; do
    case "$1" in
        --stop-after) stop=${2:?--stop-after needs a duration such as 2h30m}; shift 2 ;;
        --stop-after=*) stop=${1#*=}; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
deadline=""
if [ -n "$stop" ]; then
    seconds=$(python3 -c "import sys; from cifarlab.cli.study import parse_duration
try: print(int(parse_duration(sys.argv[1])))
except ValueError as e: sys.exit(f'protocol_study.sh: {e}')" "$stop")
    deadline=$(( $(date +%s) + seconds ))
fi

study() {  # study FOLDER PRESETS [key=value ...]: one study call, with what is left of the budget
    local folder=$1 only=$2 budget=()
    shift 2
    if [ -n "$deadline" ]; then
        local left=$(( deadline - $(date +%s) ))
        if [ "$left" -le 0 ]; then
            echo "protocol_study.sh: --stop-after $stop is spent; carry the study out (cifarlab carry out)"
            exit 0
        fi
        budget=(--stop-after "${left}s")
    fi
    cifarlab study --out "$folder" --only "$only" --workers 2 "${budget[@]}" "${args[@]}" "$@"
}

# 1. the article's six experiments at 100 epochs (seed 0; the baseline also seeds 1 and 2, for its
#    spread), fp32 as the study ran them. (On a GPU amp=auto is bf16: pass amp=off for fp32 rows.)
study "$out" vgg1,vgg2,vgg3:3,dropout,weight_decay,augmentation
# whether bf16 is native here: "yes" or "no"; anything else (an import that fails) stops the script
native=$(python3 -c "from cifarlab.engine import native_bf16, pick_device
print('yes' if native_bf16(pick_device('auto')) else 'no')")
case "$native" in yes|no) ;; *) echo "protocol_study.sh: could not tell whether bf16 is native here" >&2; exit 1 ;; esac
if [ "$native" = yes ]; then
    # 2. where bf16 is native (measured equivalent on vgg3: docs/results.md, Arithmetic), in STUDY_DIR-bf16: the
    #    baseline's three seeds (the verdict), the headline combined and centered at 400 epochs, bn_only's
    #    three seeds (bf16 measured where BatchNorm is), then the rest of the combined family, seed 0
    #    each. On two workers the longest runs go first, so the 400-epoch pair trains side by side.
    study "$out-bf16" vgg3:3,combined,centered,bn_only:3,dropout_only amp=native
    study "$out-bf16" adam,cosine,bn_dropout_swapped,step_decay,adamw,cosine_restarts,increasing_dropout,dropout_augmentation,warmup_cosine amp=native
else
    # 2. without native bf16 (a run begun in bf16 is never continued in fp32 here): fp32 work in
    #    STUDY_DIR, bn_only's three seeds (the fp32 side of the BatchNorm family's bf16 verdict), then
    #    seeds 1 and 2 of the regularisers, whose claims need more than one seed each.
    echo "no native bf16 here: the bf16 runs are left for a machine that has it; fp32 runs instead" >&2
    study "$out" bn_only:3,weight_decay:3,dropout:3,augmentation:3
fi
