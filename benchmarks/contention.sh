#!/usr/bin/env bash
# The combined network's training step with 1 and 2 threads and the default count (threads chosen
# from the cores other work leaves free), quiet and beside N busy processes, in fp32 and bf16, each
# setting one `cifarlab bench` run; a table of img/s and ratios to one thread.
#
#   bash benchmarks/contention.sh OUT [BUSY]          # BUSY: the busy processes beside (default 1)
#
# Run it on an otherwise quiet machine (no training, no tests): it is a measurement of contention.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bash benchmarks/contention.sh OUT [BUSY]" >&2; exit 2; }
out=$1 busy=${2:-1}
mkdir -p "$out"
for b in 0 "$busy"; do
  for t in 1 2 0; do
    python3 -m cifarlab bench --models combined --contenders cifarlab,cifarlab-bf16 --reps 3 --steps 30 \
      --no-peak --no-eval --threads "$t" --busy "$b" --json "$out/busy$b-threads$t.json" > "$out/busy$b-threads$t.txt"
  done
done
python3 - "$out" "$busy" <<'EOF'
import json, sys
from pathlib import Path
out, busy = Path(sys.argv[1]), sys.argv[2]
def rate(b, t, contender):
    r = json.loads((out / f"busy{b}-threads{t}.json").read_text())
    for m in r["models"]:
        for row in m["rows"]:
            if row["contender"] == contender:
                return row["images_per_second"]  # the median of the repetitions
    raise SystemExit(f"no {contender} in {out}/busy{b}-threads{t}.json")
lines = [f"device: {json.loads((out / 'busy0-threads1.json').read_text())['device']}",
         "| arithmetic | busy | 1 thread img/s | 2 threads img/s | 2 threads / 1 | default img/s | default / 1 |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
for contender, name in (("cifarlab", "fp32"), ("cifarlab-bf16", "bf16")):
    for b in ("0", busy):
        one, two, auto = rate(b, 1, contender), rate(b, 2, contender), rate(b, 0, contender)
        lines.append(f"| {name} | {b} | {one:,.0f} | {two:,.0f} | {two / one:.2f}x | {auto:,.0f} | {auto / one:.2f}x |")
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
