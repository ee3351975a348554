"""Compare any run folders: group them by their settings, then the report's table, tests and curves.

    cifarlab compare runs/mine-lr01-s0 runs/mine-lr01-s1 runs/mine-lr001-s0 runs/mine-lr001-s1 --out cmp
    # -> cmp/compare.html (self-contained), cmp/compare.md (figures in cmp/compare_files/), cmp/compare.json

Runs whose configs agree on everything but the seed (and the settings that say how a
run executes, not what it trains: device, threads, ...) form one group. The first
group on the command line is the reference: every other group's difference in mean
test accuracy is tested against it (Welch's t-test, 95% interval; and the paired test by
seed where the two groups share their network and two seeds or more, which the verdict
then uses), as the study report tests its experiments. The table, statistics, tables'
markup and figures are report.py's.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

from . import report
from .groups import IGNORED, _against, _value, label_groups, settings_of  # noqa: F401 (compare's names too)
from .model import Comparison, to_json, typed

def group_runs(run_dirs) -> tuple[list[dict], list[str]]:
    """[{label, name, settings, runs}] in the order of each group's first run, and the folders left out."""
    groups: list[dict] = []
    skipped, seen = [], set()
    for d in map(Path, run_dirs):
        if (real := d.resolve()) in seen:  # overlapping globs: one run counted twice would be a fake replicate
            skipped.append(f"{d} (given twice; counted once)")
            continue
        seen.add(real)
        if not (d / "config.yaml").is_file():
            skipped.append(f"{d} (not a run folder)")
            continue
        run = report.load_run(d)
        if isinstance(run, str):
            skipped.append(f"{d}{run or ' (not finished)'}")
            continue
        key = settings_of(run["config"])
        g = next((g for g in groups if g["settings"] == key), None)
        if g is None:
            groups.append(g := {"settings": key, "runs": []})
        g["runs"].append(run)
    for g in groups:
        g["runs"].sort(key=lambda r: r["summary"]["seed"])
        g["name"] = "+".join(sorted({r["config"].get("name", "custom") for r in g["runs"]}))
    label_groups(groups)
    return groups, skipped


def collect(run_dirs, out_dir, figures: bool = True, within: float | None = None) -> dict:
    """Every number of the comparison; figures drawn into OUT_DIR/compare_files/ when asked.

    `within` (points): a margin of equivalence. A group whose 95% interval of the difference
    to the first group (the paired test's where the groups are pairs by seed, else Welch's)
    lies inside ±within is equivalent to it for that purpose (the rule by which bf16 may
    stand in for fp32 in the study: ±1 point on the baseline's seeds)."""
    from .. import plots
    groups, skipped = group_runs(run_dirs)
    if not groups:
        raise FileNotFoundError("no finished run folder among: " + ", ".join(map(str, run_dirs)))
    rows = []
    for g in groups:
        row = report.experiment_row(g["label"], g["runs"])
        row.beyond_study = False  # a user's runs: not rows of the study
        row.description = _against(g, groups[0]) if g is not groups[0] else "(the reference)"
        row.runs = [str(r["dir"]) for r in g["runs"]]
        rows.append(row)
    first = rows[0]
    comps = []
    for g, r in zip(groups[1:], rows[1:]):
        if r.n < 2 or first.n < 2:
            continue
        t = report.tested(r, first)
        comps.append(Comparison(a=r.experiment, b=first.experiment, claim=_against(g, groups[0]), n_a=r.n,
                                n_b=first.n, **t, same_epochs=r.epochs == first.epochs,
                                comparable=r.comparable and first.comparable))
        if within is not None:  # by the interval of the verdict's test
            comps[-1].within = within
            comps[-1].equivalent = -within <= t["ci"][0] and t["ci"][1] <= within
    shared = {k: v for k, v in groups[0]["settings"].items()
              if all(_value(g["settings"][k]) == _value(v) for g in groups)}
    out = {"out_dir": str(out_dir), "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "rows": rows, "shared": shared, "skipped": skipped, "comparisons": comps, "figures": {},
           "within": within}
    if not figures:
        return out
    fig_dir = Path(out_dir) / "compare_files"
    fig_dir.mkdir(parents=True, exist_ok=True)
    tag = "" if all(r.comparable for r in rows) else " (scaled: not comparable)"
    path = fig_dir / "overlay-val_acc.png"
    plots.overlay({r.experiment: report.mean_history(g["runs"]) for g, r in zip(groups, rows)}, path,
                  title=f"validation accuracy, mean over seeds{tag}")
    out["figures"]["overlay"] = path.name
    for i, (g, r) in enumerate(zip(groups, rows), 1):
        seeds = f"mean of {r.n} seeds" if r.n > 1 else "1 seed"
        path = fig_dir / f"curves-{i}.png"
        plots.curves(report.mean_history(g["runs"]), path, title=f"{r.experiment}, {seeds}",
                     l2=report.l2_of(g["runs"]))
        out["figures"][f"curves-{i}"] = path.name
    return out


def results_table(rep: dict) -> tuple[list[str], list[list[str]]]:
    """The report's results table without the published figures (a user's settings have none)."""
    rep = typed(rep)
    head, body = report.results_table(rep)
    drop = {i for i, h in enumerate(head)
            if h in ("seed report", "article") or (h == "diff" and head[i - 1] in ("seed report", "article"))}
    keep = [i for i in range(len(head)) if i not in drop]
    head = ["group" if h == "experiment" else h for h in head]
    return [head[i] for i in keep], [[row[i] for i in keep] for row in body]


def stats_table(rep: dict) -> tuple[list[str], list[list[str]]]:
    rep = typed(rep)
    head, body = report.stats_table(rep)
    head = ["settings of A (vs B)" if h == "claim" else h for h in head]
    if rep.get("within") is not None:
        head.append(f"within ±{rep['within']:g}")
        body = [row + [_equivalence(c)] for row, c in zip(body, rep["comparisons"])]
    return head, body


def _equivalence(c: Comparison) -> str:
    lo, hi, m = c.ci[0], c.ci[1], c.within
    which = "paired" if c.test == "paired" else "Welch"
    if c.equivalent:
        return f"equivalent: the {which} interval lies inside ±{m:g}"
    far = lo if abs(lo) > abs(hi) else hi  # the end farthest beyond the margin
    return f"not shown equivalent: the {which} interval reaches {far:+.2f}, beyond ±{m:g}"


def groups_table(rep: dict) -> tuple[list[str], list[list[str]]]:
    rep = typed(rep)
    return (["group", "settings against the first group", "seeds", "device", "run folders"],
            [[r.experiment, r.description, ", ".join(map(str, r.seeds)), report._short_device(r.device),
              " ".join(r.runs)] for r in rep["rows"]])


def devices_note(rep: dict) -> str | None:
    """A warning where the groups ran on different devices: their times then measure the machines
    as much as the settings (accuracy is unaffected). None where they share one."""
    rep = typed(rep)
    devices = {r.device for r in rep["rows"]}
    if len(devices) < 2:
        return None
    return ("The groups ran on different devices (see Groups): wall and epoch times compare the machines "
            "as much as the settings; compare speeds with `cifarlab bench` on one machine.")


def _intro(rep: dict) -> str:
    n = sum(r.n for r in rep["rows"])
    return (f"{n} finished run(s) in {len(rep['rows'])} group(s): runs whose settings agree on everything "
            f"but the seed form a group; each group is tested against the first, {rep['rows'][0].experiment}.")


def _shared_line(rep: dict) -> str:
    from ..config import Config, to_dict
    default = to_dict(Config())
    own = [f"{k}={_value(v)}" for k, v in rep["shared"].items() if _value(default.get(k)) != _value(v)]
    return "Settings every group shares, where they differ from cifarlab's defaults: " + (", ".join(own) or "none")


TESTS_TEXT = ("Each group's difference in mean test accuracy to the first group (percentage points) has its "
              "95% confidence interval from Welch's t-test over seeds and, where the two groups are pairs by "
              "seed, from the paired t-test on the per-seed differences: runs of one seed and one network (the "
              "same model settings) start from the same weights and see the same batches, so two groups of one "
              "network that share two seeds or more are pairs. The verdict (and the margin of equivalence) uses "
              "the paired test where there are pairs, Welch's otherwise, and says which. Groups need at least "
              "two seeds each.")

NOTE = ("Test accuracy on the 10,000 CIFAR-10 test images, in % (mean ± standard deviation over the "
        "group's seeds).")


def render_md(rep: dict) -> str:
    rep = typed(rep)
    t = report.md_table
    figs = rep["figures"]
    md = [f"# CIFAR-10 run comparison: {rep['out_dir']}", "", f"Created {rep['created']}. {_intro(rep)}", "",
          _shared_line(rep) + ".", ""]
    if any(not r.comparable for r in rep["rows"]):
        md += [f"**{report.NOTE_SCALED}**", ""]
    md += ["## Results", "", NOTE, "", t(*results_table(rep)), ""]
    if devices_note(rep):
        md += [devices_note(rep), ""]
    md += ["## Groups", "", t(*groups_table(rep)), ""]
    if rep["skipped"]:
        md += [f"Left out: {', '.join(rep['skipped'])}", ""]
    md += ["## Is the difference more than run-to-run noise?", ""]
    if rep["comparisons"]:
        md += [f"{TESTS_TEXT}", "", t(*stats_table(rep)), ""]
        if report.paired_table(rep)[1]:
            md += ["The paired tests by seed:", "", t(*report.paired_table(rep)), ""]
    else:
        md += ["No group has two or more seeds beside a first group that has them; train more seeds "
               "(`seed=1`, `seed=2`, ...) to test the differences.", ""]
    if figs:
        md += ["## Validation accuracy", "", f"![validation accuracy](compare_files/{figs['overlay']})", "",
               "## Learning curves per group", ""]
        md += [f"### {r.experiment}\n\n![{r.experiment}](compare_files/{figs[f'curves-{i}']})\n"
               for i, r in enumerate(rep["rows"], 1) if f"curves-{i}" in figs]
    return "\n".join(md) + "\n"


def render_html(rep: dict, out_dir) -> str:
    rep = typed(rep)
    e, t = html.escape, report.html_table
    fig_dir = Path(out_dir) / "compare_files"
    figs = rep["figures"]
    parts = [f"<h1>CIFAR-10 run comparison</h1><p>{e(rep['out_dir'])}: created {e(rep['created'])}. "
             f"{e(_intro(rep))}</p><p>{e(_shared_line(rep))}.</p>"]
    if any(not r.comparable for r in rep["rows"]):
        parts.append(f'<p class="note">{e(report.NOTE_SCALED)}</p>')
    parts.append(f"<h2>Results</h2><p>{e(NOTE)}</p>" + t(*results_table(rep), cls="results"))
    if devices_note(rep):
        parts.append(f'<p class="note">{e(devices_note(rep))}</p>')
    parts.append("<h2>Groups</h2>" + t(*groups_table(rep), text_cols=(1, 3, 4), cls="groups"))
    if rep["skipped"]:
        parts.append(f"<p>Left out: {e(', '.join(rep['skipped']))}</p>")
    parts.append("<h2>Is the difference more than run-to-run noise?</h2>")
    if rep["comparisons"]:
        parts.append(f"<p>{e(TESTS_TEXT)}</p>")
        head, body = stats_table(rep)
        parts.append(t(head, body, text_cols=report.text_columns(head), cls="stats"))
        if report.paired_table(rep)[1]:
            parts.append("<p>The paired tests by seed:</p>"
                         + t(*report.paired_table(rep), text_cols=(0, 1, 2, 3), cls="paired"))
    else:
        parts.append("<p>No group has two or more seeds beside a first group that has them; train more seeds "
                     "to test the differences.</p>")
    if figs:
        parts.append("<h2>Validation accuracy</h2>" + report._img(fig_dir / figs["overlay"], "validation accuracy"))
        parts.append("<h2>Learning curves per group</h2><div class=grid>")
        for i, r in enumerate(rep["rows"], 1):
            if f"curves-{i}" in figs:
                parts.append(f"<figure>{report._img(fig_dir / figs[f'curves-{i}'], r.experiment)}"
                             f"<figcaption>{e(r.experiment)}</figcaption></figure>")
        parts.append("</div>")
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>CIFAR-10 run comparison</title>"
            f"<style>{report.CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def write_compare(run_dirs, out_dir, within: float | None = None) -> dict:
    from ..checkpoint import atomic_write_text
    out_dir = Path(out_dir)  # made by the first figure or file: a run folder refused leaves no folder behind
    rep = collect(run_dirs, out_dir, within=within)
    atomic_write_text(out_dir / "compare.md", render_md(rep))
    atomic_write_text(out_dir / "compare.html", render_html(rep, out_dir))
    atomic_write_text(out_dir / "compare.json", json.dumps(rep, indent=2, default=to_json))
    return rep


def format_table(rep: dict) -> list[str]:
    """The results and the tests against the first group, as aligned text for the terminal."""
    rep = typed(rep)
    lines = []
    for head, body in (results_table(rep), _short_stats(rep)):
        if not body:
            continue
        w = [max(len(str(c)) for c in col) for col in zip(head, *body)]
        lines += ["  ".join(str(c).ljust(n) for c, n in zip(row, w)).rstrip() for row in [head] + body]
        lines.append("")
    if devices_note(rep):
        lines.append(devices_note(rep))
        lines.append("")
    return lines[:-1]


def _short_stats(rep: dict) -> tuple[list[str], list[list[str]]]:
    head, body = stats_table(rep)
    keep = [i for i, h in enumerate(head) if h != "settings of A (vs B)"]
    return [head[i] for i in keep], [[row[i] for i in keep] for row in body]
