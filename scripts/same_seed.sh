#!/usr/bin/env bash
# Does a change keep the numerics? Trains the same short run, same seed, at two commits and compares
# their metrics.csv and test results, all but the timing columns.
#
#   bash scripts/same_seed.sh OLD NEW [key=value ...]
#   bash scripts/same_seed.sh 9b6e7a2 HEAD                       # combined, 2 epochs on 2000 images
#   bash scripts/same_seed.sh 9b6e7a2 HEAD --preset vgg3 epochs=1
#
# Each commit is checked out in a temporary worktree (the work tree is not touched), and each run has
# one thread, in fp32 (amp=off) and in the machine's native arithmetic (amp=native: bf16 where the CPU
# has bf16 instructions). Exit status 0 when every pair is equal, 1 when one differs.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bash scripts/same_seed.sh OLD NEW [--preset NAME] [key=value ...]" >&2; exit 2; }
old=$1 new=$2; shift 2
preset=combined
if [ "${1:-}" = --preset ]; then preset=$2; shift 2; fi
settings=("$@")
[ ${#settings[@]} -gt 0 ] || settings=(epochs=2 subset=2000)
[ -n "${CIFARLAB_DATA:-}" ] || { echo "same_seed.sh: set CIFARLAB_DATA to the CIFAR-10 folder" >&2; exit 2; }
repo=$(git rev-parse --show-toplevel)
work=$(mktemp -d "${TMPDIR:-/tmp}/same-seed.XXXXXX")
trap 'git -C "$repo" worktree remove --force "$work/old" 2>/dev/null; git -C "$repo" worktree remove --force "$work/new" 2>/dev/null; true' EXIT
for side in old new; do
  commit=${!side}
  git -C "$repo" rev-parse --verify -q "$commit^{commit}" >/dev/null \
    || { echo "same_seed.sh: $commit is not a commit of this repository" >&2; exit 2; }
  git -C "$repo" worktree add -q --detach "$work/$side" "$commit"
done
status=0
for amp in off native; do
  for side in old new; do
    PYTHONPATH="$work/$side/src" python3 -m cifarlab train --preset "$preset" --out "$work/run-$side-$amp" --quiet \
      "${settings[@]}" threads=1 seed=0 amp=$amp > "$work/run-$side-$amp.log"
  done
  if python3 - "$work/run-old-$amp" "$work/run-new-$amp" <<'EOF'
import csv, json, sys
TIMING = {"epoch_seconds", "images_per_second", "wall_seconds"}
a, b = (list(csv.DictReader(open(f"{d}/metrics.csv"))) for d in sys.argv[1:])
common = [k for k in a[0] if k in b[0] and k not in TIMING]  # a column one commit added is not compared
added = [k for k in b[0] if k not in a[0]]
strip = lambda rows: [{k: r[k] for k in common} for r in rows]
sa, sb = (json.load(open(f"{d}/summary.json")) for d in sys.argv[1:])
same = strip(a) == strip(b) and (sa["test_acc"], sa.get("test_loss")) == (sb["test_acc"], sb.get("test_loss"))
if added:
    print(f"  (columns only the second commit writes, not compared: {', '.join(added)})")
for r in strip(b):
    print("  " + " ".join(f"{k}={v}" for k, v in r.items()))
print(f"  test_acc {sa['test_acc']} / {sb['test_acc']}")
sys.exit(0 if same else 1)
EOF
  then echo "amp=$amp: equal ($old and $new)"; else echo "amp=$amp: DIFFERENT ($old and $new)"; status=1; fi
done
exit $status
