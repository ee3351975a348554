"""Turn a study folder into a report: report.html (self-contained) and report.md.

    cifarlab report studies/quick          # -> studies/quick/report.html, report.md, report.json
    cifarlab report                        # the most recent study under ./studies

    from cifarlab.reporting.report import collect, write_report
    rep = collect("studies/quick", figures=False)   # the numbers: rep["rows"] (model.Row, one per experiment),
                                                    # rep["comparisons"] (model.Comparison), rep["fidelity"]
    write_report("studies/quick")                   # the three files, as the command writes them

The HTML embeds every figure as base64 PNG, so the one file opens offline; report.md
links the same PNGs in report_files/. report.json holds the numbers of both.
"""
from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path

import numpy as np
import yaml

from ..config import STUDY_ORDER, study_order
from ..errors import CifarlabError
from .claims import study_claims
from .groups import network_of
from .model import Cell, Check, Comparison, Row, text_of, to_json, typed
from ..study.jobs import epochs_done, preset_seeds, read_study

REFS = (("seed_report", "seed report"), ("article", "article"))


# --- numbers -------------------------------------------------------------------------

def load_runs(study_dir) -> tuple[dict[str, list[dict]], list[str], list[str], list[str]]:
    """Finished runs per preset ({preset: [run, ...]}, by seed), the unfinished run folders, the
    finished ones trained without the test set (test=false), and the finished ones whose epochs were
    computed in more than one arithmetic without their folder admitting it (see mixed_arithmetic)."""
    runs, unfinished, untested, mixed = {}, [], [], []
    for run_dir in sorted(Path(study_dir).glob("runs/*/seed*")):
        run = load_run(run_dir)
        name = str(run_dir.relative_to(study_dir))
        if run == UNTESTED:
            untested.append(name)
        elif isinstance(run, str):
            unfinished.append(name + _progress(run_dir))
        elif mixed_arithmetic(run) and not (run_dir / MIXED_NOTE).is_file():
            mixed.append(f"{name} ({run['summary']['arithmetic']})")
        else:
            runs.setdefault(run_dir.parent.name, []).append(run)
    for rs in runs.values():
        rs.sort(key=lambda r: r["summary"]["seed"])
    return runs, unfinished, untested, mixed


# A run whose epochs were computed in more than one arithmetic (begun in bf16, continued in fp32 on another
# machine) measures neither: it is no protocol row unless its folder holds this note, saying why it counts.
MIXED_NOTE = "mixed-arithmetic.txt"
MIXED_LINE = (f"Computed in more than one arithmetic (not in the table; a note in the run's {MIXED_NOTE} "
              "admits one)")


def mixed_arithmetic(run: dict) -> bool:
    """Whether a finished run's epochs were computed in more than one arithmetic: its summary then
    says which epochs in which ("bf16 (epochs 1-40), fp32 (epochs 41-100)", train.run_arithmetic)."""
    return "(epoch" in str(run["summary"].get("arithmetic") or "")


def _progress(run_dir: Path) -> str:
    """How far an unfinished run got: " (at epoch 139 of 400)", "" before its first epoch."""
    k = epochs_done(run_dir)
    if not k:
        return ""
    try:
        total = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("epochs")
    except (OSError, yaml.YAMLError):
        total = None
    return f" (at epoch {k}" + (f" of {total})" if total else ")")


def arithmetic(summary: dict, config: dict) -> str:
    """What a run computed in: its summary says so; for runs written before it did, the config's
    amp and the device tell (fp32 unless bf16 was asked for and the device had bf16 units)."""
    if summary.get("arithmetic"):
        return summary["arithmetic"]
    amp, device = config.get("amp", "auto"), summary.get("device", "")
    cpu = device.startswith("cpu")
    if amp == "off" or (amp == "auto" and cpu) or (amp == "native" and cpu and "+bf16" not in device):
        return "fp32"
    return {"fp16": "fp16", "bf16": "bf16", "native": "bf16", "auto": "bf16"}.get(amp, "?")


UNTESTED = " (test set not used)"


def load_run(run_dir: Path) -> dict | str:
    """A finished run folder's summary, config and metrics; else why it is left out: "" (not
    finished) or UNTESTED."""
    from ..runfolder import read_metrics, read_summary
    if not (run_dir / "summary.json").is_file():
        return ""
    s = read_summary(run_dir)
    if s.get("test_acc") is None:  # trained with test=false: nothing to report against the references
        return UNTESTED
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    return {"dir": run_dir, "summary": s, "config": cfg, "history": read_metrics(run_dir)}


def _median_epoch(rs: list[dict]) -> float | None:
    """Mean over the seeds of each run's median epoch time (None where no run recorded one)."""
    med = [float(np.median([h["epoch_seconds"] for h in r["history"]])) for r in rs
           if r.get("history") and all("epoch_seconds" in h for h in r["history"])]
    return float(np.mean(med)) if med else None


def _devices(rs: list[dict]) -> str:
    """The device of an experiment's runs; where its seeds ran on different devices, each
    with the seeds it ran (a row's mean may mix machines, and says so)."""
    seeds: dict[str, list[int]] = {}
    for r in rs:
        seeds.setdefault(r["summary"].get("device", ""), []).append(r["summary"]["seed"])
    if len(seeds) == 1:
        return next(iter(seeds))
    return "; ".join(f"{d or 'device not recorded'} (seed{'s' if len(v) > 1 else ''} {', '.join(map(str, sorted(v)))})"
                     for d, v in seeds.items())


def late_epoch_sd(run: dict) -> float | None:
    """How much a run's test accuracy moves from epoch to epoch once trained: its standard
    deviation (points) over the second half of the epochs. A figure read at the last epoch,
    as the study's were, is one draw from that spread. None where the per-epoch curve is not
    the test set (val_split) or the run is too short to have a second half of 3 epochs."""
    h = run.get("history") or []
    if not run["summary"].get("val_is_test", True) or len(h) < 6:
        return None
    late = [100 * r["val_acc"] for r in h[len(h) // 2:]]
    return float(np.std(late, ddof=1))


def experiment_row(name: str, rs: list[dict], preset: str | None = None) -> Row:
    """Mean and spread of one experiment's seeds, beside the published figures (all in %); `name` is
    the row's label where it is not the preset's name ("vgg3 amp=native")."""
    accs = [100 * r["summary"]["test_acc"] for r in rs]
    ref = rs[0]["summary"].get("reference") or {}
    mean = float(np.mean(accs))
    late = [v for v in map(late_epoch_sd, rs) if v is not None]
    published = {key: float(ref[key]) if ref.get(key) is not None else None for key, _ in REFS}
    return Row(
        experiment=name, preset=preset or name, n=len(accs), seeds=[r["summary"]["seed"] for r in rs],
        test_acc=accs, mean=mean, std=float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
        epochs=sorted({r["summary"]["epochs"] for r in rs}),
        wall_seconds=float(np.mean([r["summary"]["wall_seconds"] for r in rs])),
        # the steadier cost figure: an epoch slowed by other work or a pause moves the wall, not the median
        median_epoch_seconds=_median_epoch(rs),
        comparable=all(r["summary"].get("comparable", True) for r in rs),
        train_images=sorted({r["summary"]["train_images"] for r in rs}),
        description=rs[0]["config"].get("description", ""),
        beyond_study=(preset or name) not in STUDY_ORDER,  # a recipe of cifarlab's own (fast94, fast_combined)
        device=_devices(rs),
        arithmetic="/".join(sorted({arithmetic(r["summary"], r["config"]) for r in rs})),
        network=network_of(rs[0]["config"]),  # a row's runs share their settings: what pairs it by seed
        late_epoch_sd=float(np.mean(late)) if late else None,  # mean over the seeds
        seed_report=published["seed_report"],
        diff_seed_report=mean - published["seed_report"] if published["seed_report"] is not None else None,
        article=published["article"],
        diff_article=mean - published["article"] if published["article"] is not None else None)

# How far a comparable row may lie from a published figure before it is investigated (points).
TOLERANCE = 1.5
RULE = ("A comparable row is checked against each published figure: a difference of more than "
        f"{TOLERANCE} points, or, where the row has two or more seeds, of more than twice its standard "
        "deviation, is beyond noise and is investigated (the Keras semantics cifarlab keeps, listed in the "
        "README, then Keras itself). \"Epoch to epoch\" is how much the test accuracy still moves once "
        "trained (its standard deviation over the second half of the epochs, mean over the seeds): a figure "
        "read at the last epoch, as the study's were, is one draw from that spread.")


def fidelity(rows: list[Row]) -> list[Check]:
    """Each published figure of each comparable study row against the tolerance (RULE)."""
    out = []
    for r in rows:
        if not r.comparable or r.beyond_study:
            continue
        limit = TOLERANCE if r.std is None else min(TOLERANCE, 2 * r.std)
        for key, label in REFS:
            if r.published(key) is not None:
                d = r.diff(key)
                out.append(Check(experiment=r.experiment, source=label, published=r.published(key), ours=r.mean,
                                 n=r.n, diff=d, limit=limit, beyond=abs(d) > limit, late_epoch_sd=r.late_epoch_sd))
    return out


FINDINGS = "findings.yaml"


def read_findings(study_dir) -> dict[str, str]:
    """STUDY_DIR/findings.yaml: what the investigation of a row found, in words, by experiment
    ({} without the file). The report prints each beside the fidelity checks, and a row beyond
    noise that has one reads "finding below" instead of "investigate" (a finding says what is known,
    which may be that the question is still open)."""
    from ..config import preset_names
    path = Path(study_dir) / FINDINGS
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CifarlabError(f"{path} is not valid YAML: {e}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise CifarlabError(f"{path} must map experiment names to text (experiment: |, then the text)")
    valid = preset_names()
    unknown = sorted(str(k) for k in data if k not in valid)
    if unknown:
        raise CifarlabError(f"{path}: unknown experiment(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    bad = sorted(k for k, v in data.items() if not isinstance(v, str) or not v.strip())
    if bad:
        raise CifarlabError(f"{path}: the finding of {', '.join(bad)} must be text (experiment: |, then the text)")
    return {k: data[k].strip() for k in study_order(data)}


def welch(a: list[float], b: list[float]) -> dict:
    """Welch's t-test of mean(a) - mean(b), and the difference's 95% confidence interval."""
    from scipy import stats
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = a.mean() - b.mean()
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:  # identical runs within each group: no noise to compare with, so no t and no df
        # (None, not NaN: report.json and compare.json stay JSON that any parser reads)
        return {"diff": diff, "t": None, "p": 0.0 if diff else 1.0, "df": None, "ci": (diff, diff)}
    r = stats.ttest_ind(a, b, equal_var=False)  # df: Welch-Satterthwaite
    ci = r.confidence_interval(0.95)
    return {"diff": diff, "t": float(r.statistic), "p": float(r.pvalue), "df": float(r.df),
            "ci": (float(ci.low), float(ci.high))}


def paired(a: list[float], b: list[float], seeds: list[int]) -> dict:
    """The paired t-test of a - b by seed (a[i] and b[i] are seed seeds[i]'s): the mean of the per-seed
    differences, its 95% confidence interval from the t distribution with n - 1 degrees of freedom, t and p."""
    from scipy import stats
    d = np.asarray(a, float) - np.asarray(b, float)
    diff, sd = float(d.mean()), float(d.std(ddof=1))
    out = {"seeds": list(seeds), "n": len(d), "diffs": [float(x) for x in d], "diff": diff, "sd": sd,
           "df": len(d) - 1}
    if sd == 0:  # every seed moved by the same amount: no noise to compare with, so no t (as welch)
        return {**out, "t": None, "p": 0.0 if diff else 1.0, "ci": (diff, diff)}
    r = stats.ttest_rel(a, b)
    ci = r.confidence_interval(0.95)
    return {**out, "t": float(r.statistic), "p": float(r.pvalue), "ci": (float(ci.low), float(ci.high))}


def _pairs(a: Row, b: Row) -> tuple[list[int], str]:
    """The seeds that pair rows a and b, and why they are paired or not. Runs of one seed and one network
    start from the same weights and see the same batches: two rows of one network that share two seeds or
    more are pairs by seed."""
    common = sorted(set(a.seeds) & set(b.seeds))
    if len(common) < 2:
        return [], "no seed in common" if not common else f"one seed in common ({common[0]})"
    if a.network is None or a.network != b.network:
        return [], "different networks"
    return common, f"{len(common)} pairs by seed"


def tested(a: Row, b: Row) -> dict:
    """Row a against row b: Welch's test always, the paired test by seed where the design gives pairs
    (_pairs). The verdict uses the paired test where there is one, else Welch's: "test" names it, and
    diff, t, p, df and ci are its numbers; "welch" and "paired" (None without pairs) hold both tests."""
    w = welch(a.test_acc, b.test_acc)
    seeds, why = _pairs(a, b)
    pt = None
    if seeds:
        acc_a, acc_b = dict(zip(a.seeds, a.test_acc)), dict(zip(b.seeds, b.test_acc))
        pt = paired([acc_a[k] for k in seeds], [acc_b[k] for k in seeds], seeds)
    used = pt or w
    return {"test": "paired" if pt else "welch", "pairing": why,
            **{k: used[k] for k in ("diff", "t", "p", "df", "ci")}, "welch": w, "paired": pt,
            "distinguishable": used["p"] < 0.05}


def comparisons(rows: dict[str, Row], bases: dict[str, str]) -> list[Comparison]:
    """The study's claims first, then each experiment against the preset it varies, each between rows
    of the same settings (the plain rows, then those of each other setting); then each row of other
    settings against its preset's plain row."""
    key = {(r.preset, tuple(r.variant or ())): k for k, r in rows.items()}
    pairs = []
    for v in dict.fromkeys([()] + [v for _, v in key]):
        mine = [(c.experiment, c.against, c.said) for c in study_claims().claims]
        seen = {(a, b) for a, b, _ in mine} | {(b, a) for a, b, _ in mine}
        for a in study_order(p for p, w in key if w == v):
            b = bases.get(a)
            if b and (a, b) not in seen:
                mine.append((a, b, f"{a} against {b}, the preset it varies"))
                seen |= {(a, b), (b, a)}
        pairs += [(key.get((a, v)), key.get((b, v)), claim) for a, b, claim in mine]
    for k, r in rows.items():
        if r.variant:
            pairs.append((k, key.get((r.preset, ())), f"{k} against {r.preset}, the same preset: {r.against}"))
    out = []
    for a, b, claim in pairs:
        if a not in rows or b not in rows or rows[a].n < 2 or rows[b].n < 2:
            continue
        same_length = rows[a].epochs == rows[b].epochs
        out.append(Comparison(a=a, b=b, claim=claim, n_a=rows[a].n, n_b=rows[b].n, **tested(rows[a], rows[b]),
                              same_epochs=same_length, comparable=rows[a].comparable and rows[b].comparable))
    return out


def preset_bases() -> dict[str, str]:
    """preset -> the preset it starts from (`base:` in its YAML)."""
    from importlib import resources
    out = {}
    for p in (resources.files("cifarlab") / "presets").iterdir():
        if p.name.endswith(".yaml"):
            d = yaml.safe_load(p.read_text()) or {}
            if "base" in d:
                out[p.name[:-5]] = d["base"]
    return out


def mean_history(rs: list[dict]) -> list[dict]:
    """Epoch-wise mean over seeds (up to the shortest run); val_loss_l2 (the validation loss with the
    L2 penalty, as Keras reports it) where every run's record has it (nan in a mean where one is nan)."""
    n = min(len(r["history"]) for r in rs)
    keys = ["train_loss", "train_acc", "val_loss", "val_acc"]
    if all("val_loss_l2" in h for r in rs for h in r["history"][:n]):
        keys.append("val_loss_l2")
    return [{"epoch": i + 1, **{k: float(np.mean([r["history"][i][k] for r in rs])) for k in keys}}
            for i in range(n)]


def l2_of(rs: list[dict]) -> float:
    """The L2 penalty a row's runs trained with (they share their settings), for its curves."""
    return float(rs[0]["config"].get("l2") or 0.0)


class TestSetUnavailable(CifarlabError):
    """The test set could not be loaded: no run can be measured from its checkpoint."""


def _run_name(run: dict) -> str:
    return run.get("run_name") or f"{run['dir'].parent.name}/{run['dir'].name}"


def best_run_analysis(run: dict, data_path=None) -> dict:
    """Per-class accuracy and the confusion matrix of one run on the test set: as its
    summary.json records them (runs trained since it does), else measured from its checkpoint."""
    from ..metrics import per_class_accuracy
    kept = run["summary"].get("test_confusion")
    if kept:
        return {"run": str(run["dir"]), "test_acc": run["summary"]["test_acc"], "matrix": kept["matrix"],
                "per_class": per_class_accuracy(kept["matrix"], kept["classes"]), "classes": kept["classes"],
                "source": "summary.json"}
    import torch
    from ..checkpoint import load, model_from_checkpoint
    from ..data import CLASSES, load_cifar10
    from ..metrics import confusion_matrix
    from ..engine import evaluate
    state = load(run["dir"] / "checkpoint.pt")
    model = model_from_checkpoint(state, run["dir"] / "checkpoint.pt")  # a mismatch names the file
    try:
        ds = load_cifar10(data_path)
    except (FileNotFoundError, CifarlabError) as e:
        raise TestSetUnavailable(str(e)) from e
    norm = state.get("norm") or run["summary"]["norm"]
    x, y = torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)
    cl = state["config"].get("channels_last", True)
    if cl:  # evaluate as training did (its layout and test-time views), so the accuracy matches its summary
        model = model.to(memory_format=torch.channels_last)
    # in the run's arithmetic and evaluation batches, as its summary's accuracy was measured
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(run["summary"].get("arithmetic"))
    ev = evaluate(model, x, y, torch.tensor(norm["mean"]), torch.tensor(norm["std"]),
                  batch_size=int(state["config"].get("eval_batch_size") or 1000), channels_last=cl, amp=amp,
                  tta=state["config"].get("tta", 0))
    m = confusion_matrix(ds.y_test, ev["logits"].argmax(1))
    return {"run": str(run["dir"]), "test_acc": float(ev["acc"]), "matrix": m.tolist(),
            "per_class": per_class_accuracy(m), "classes": list(CLASSES), "source": "checkpoint.pt"}


def analysable_best(ranked: list[dict], data_path=None) -> tuple:
    """The best of RANKED (best first) that can be analysed: (its analysis, the run, the better runs
    passed over, each with why); (None, None, all of them) when none can be."""
    passed, no_test_set = [], None
    for run in ranked:
        if no_test_set and not run["summary"].get("test_confusion"):
            error = no_test_set  # measured from a checkpoint: needs the test set, which did not load
        else:
            try:
                return best_run_analysis(run, data_path), run, passed
            except TestSetUnavailable as e:
                error = no_test_set = e
            except (FileNotFoundError, CifarlabError) as e:  # no checkpoint, a damaged one
                error = e
        passed.append({"name": _run_name(run), "test_acc": run["summary"]["test_acc"], "error": str(error)})
    return None, None, passed


# --- the report ----------------------------------------------------------------------

class DuplicateRun(CifarlabError):
    """The same preset, seed and settings finished in two study folders: which one counts is unclear."""


def study_dirs(study_dir) -> list[Path]:
    """A study folder or a list of them, as a list of paths."""
    return [Path(d) for d in study_dir] if isinstance(study_dir, (list, tuple)) else [Path(study_dir)]


def settings_groups(dirs: list[Path]) -> tuple[list[dict], list[str], list[str]]:
    """The finished runs of the study folders as rows: one group per preset and settings (compare's
    settings_of: all but the seed and how a run executes), labelled by groups.label_groups, where the
    plain group of a preset (the preset's settings as they are, else the first folder's) keeps its bare
    name; in the study's order, plain first. Then the unfinished and the untested run folders (with
    several folders, their paths with the folder's)."""
    from ..config import load_preset, preset_names, to_dict
    from .groups import _against, label_groups, settings_of
    several = len(dirs) > 1
    groups, unfinished, untested, mixed = [], [], [], []
    for d in dirs:
        runs, unf, unt, mix = load_runs(d)
        unfinished += [str(d / u) if several else u for u in unf]
        untested += [str(d / u) if several else u for u in unt]
        mixed += [str(d / u) if several else u for u in mix]
        for name, rs in runs.items():
            for r in rs:
                r["study"] = d
                if several:
                    r["run_name"] = str(r["dir"])
                key = settings_of(r["config"])
                g = next((g for g in groups if g["name"] == name and g["settings"] == key), None)
                if g is None:
                    groups.append(g := {"name": name, "settings": key, "runs": []})
                seed = r["summary"]["seed"]
                twin = next((x for x in g["runs"] if x["summary"]["seed"] == seed), None)
                if twin:
                    raise DuplicateRun(f"{name} seed {seed} finished twice with the same settings: {twin['dir']} "
                                       f"and {r['dir']}; a run counts once, so move one of them out of its study")
                g["runs"].append(r)
    out = []
    for name in study_order(g["name"] for g in groups):
        kin = [g for g in groups if g["name"] == name]
        as_is = settings_of(to_dict(load_preset(name))) if name in preset_names() else None
        plain = next((g for g in kin if g["settings"] == as_is), kin[0])
        label_groups(kin, plain)
        for g in kin:
            g["runs"].sort(key=lambda r: r["summary"]["seed"])
            g["against"] = _against(g, plain)
        out += [plain] + [g for g in kin if g is not plain]
    return out, unfinished, untested, mixed


def _findings(dirs: list[Path], groups: list[dict]) -> dict[str, str]:
    """Each folder's findings.yaml on the rows of that folder (by label; a preset without a row there
    by its name), in the study's order."""
    out: dict[str, str] = {}
    for d in dirs:
        for name, text in read_findings(d).items():
            labels = [g["label"] for g in groups if g["name"] == name and any(r["study"] == d for r in g["runs"])]
            for label in labels or [name]:
                out[label] = f"{out[label]}\n\n{text}" if out.get(label, text) != text else text
    rank = {n: i for i, n in enumerate(study_order({label.split()[0] for label in out}))}
    return {k: out[k] for k in sorted(out, key=lambda k: (rank[k.split()[0]], " " in k, k))}


def _slug(label: str) -> str:
    import re
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)


def collect(study_dir, data_path=None, figures: bool = True, out_dir=None) -> dict:
    """Every number of the report of a study folder, or of several (a list of them: their runs in rows by
    preset and settings, see settings_groups); figures drawn into OUT_DIR/report_files/ (by default the
    one study folder's) when asked."""
    from .. import plots
    dirs = study_dirs(study_dir)
    several = len(dirs) > 1
    if several and out_dir is None:
        raise CifarlabError("a report of several study folders needs a folder of its own: name it (--out DIR)")
    for d in dirs:
        if not (d / "runs").is_dir():
            raise FileNotFoundError(f"{d} is not a study folder (no runs/); run `cifarlab study` first")
    groups, unfinished, untested, mixed = settings_groups(dirs)
    runs = {g["label"]: g["runs"] for g in groups}
    names = list(runs)
    rows = {}
    for g in groups:
        rows[g["label"]] = row = experiment_row(g["label"], g["runs"], g["name"])
        row.variant, row.runs = g["variant"], [str(r["dir"]) for r in g["runs"]]
        if g["variant"]:  # what the row changes from its preset's plain row, said where the preset is described
            row.against = g["against"]
            row.description = f"{row.description}; this row: {g['against']}".lstrip("; ")
    metas = []
    for d in dirs:
        metas.append(read_study(d) or {})
    out = {"study_dir": ", ".join(map(str, dirs)), "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "meta": metas[0], "rows": [rows[n] for n in names], "unfinished": unfinished,
           "untested": untested, "mixed": mixed,
           "comparisons": comparisons(rows, preset_bases()), "figures": {}, "best": None,
           "fidelity": fidelity([rows[n] for n in names]), "findings": _findings(dirs, groups)}
    if several:
        out["studies"] = [{"dir": str(d), "meta": m} for d, m in zip(dirs, metas)]
    out["unfinished"] += _planned_only(out)
    if not figures or not names:
        return out
    fig_dir = Path(out_dir or dirs[0]) / "report_files"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):  # the report's own folder: no figure of an earlier report survives
        old.unlink()
    figs = out["figures"]
    for n in names:
        tag = "" if rows[n].comparable else " (scaled: not comparable)"
        seeds = f"mean of {rows[n].n} seeds" if rows[n].n > 1 else "1 seed"
        path = fig_dir / f"curves-{_slug(n)}.png"
        plots.curves(mean_history(runs[n]), path, title=f"{n}, {seeds}{tag}", l2=l2_of(runs[n]))
        figs[f"curves-{n}"] = path.name
    for group in study_claims().groups:
        present = [m for m in group.presets if m in runs]
        if len(present) < 2:
            continue
        title, slug = group.title, group.slug
        path = fig_dir / f"group-{slug}.png"
        tag = "" if all(rows[m].comparable for m in present) else " (scaled: not comparable)"
        plots.overlay({m: mean_history(runs[m]) for m in present}, path,
                      title=f"{title}: validation accuracy, mean over seeds{tag}")
        figs[f"group-{slug}"] = path.name
    for name in dict.fromkeys(g["name"] for g in groups):
        kin = [g["label"] for g in groups if g["name"] == name]
        if len(kin) < 2:
            continue
        path = fig_dir / f"group-{_slug(name)}-by-settings.png"
        tag = "" if all(rows[m].comparable for m in kin) else " (scaled: not comparable)"
        plots.overlay({m: mean_history(runs[m]) for m in kin}, path,
                      title=f"{name} by settings: validation accuracy, mean over seeds{tag}")
        figs[f"group-{_slug(name)}-by-settings"] = path.name
    ranked = sorted((r for n in names for r in runs[n]), key=lambda r: -r["summary"]["test_acc"])
    b, best, passed = analysable_best(ranked, data_path)
    if passed:
        out["best_error"] = f"{ranked[0]['dir']}: {passed[0]['error']}"
    if b is None:  # nothing analysable: the rest of the report stands
        return out
    b["rank"], b["runs"], b["passed_over"] = len(passed) + 1, len(ranked), passed
    b["name"] = _run_name(best)
    b["comparable"] = best["summary"].get("comparable", True)
    plots.per_class(b["per_class"], fig_dir / "best-per-class.png", title=f"{b['name']}: accuracy per class")
    plots.confusion(b["matrix"], b["classes"], fig_dir / "best-confusion.png",
                    title=f"{b['name']}: confusion matrix (test set)")
    figs["best-per-class"], figs["best-confusion"] = "best-per-class.png", "best-confusion.png"
    out["best"] = b
    return out


def _best_title(b: dict) -> str:
    acc = f"{100 * b['test_acc']:.2f}%{'' if b['comparable'] else '†'}"
    if b.get("rank", 1) == 1:
        return f"Best run: {b['name']} ({acc})"
    return f"Best run analysed: {b['name']} ({acc}), number {b['rank']} of {b['runs']} runs by test accuracy"


def _passed_over(b: dict) -> str:
    """The better runs the analysis passed over, each with the first line of its reason."""
    said = [f"{p['name']} ({100 * p['test_acc']:.2f}%: {p['error'].splitlines()[0]})" for p in b["passed_over"]]
    return ("Passed over, better but not analysable (no confusion matrix in its summary.json, and no "
            "checkpoint to measure one from): " + "; ".join(said) + ".")


def _f(v, fmt="{:.2f}", signed=False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return ("{:+.2f}" if signed else fmt).format(v)


def _mark(row) -> str:
    return "" if row.comparable else "†"


UNTESTED_LINE = "Trained without the test set (test=false; not in the table)"
NOTE_BEYOND = ("‡ beyond the study: a recipe the study did not run (cifarlab's own), listed with its "
               "epochs and training time beside the study's.")


def beyond_lines(rep: dict) -> list[str]:
    """One sentence per beyond-the-study row: its accuracy and time beside the study's epochs."""
    rep = typed(rep)
    from ..config import load_preset
    study = [r for r in rep["rows"] if not r.beyond_study]
    lines = []
    for r in rep["rows"]:
        if not r.beyond_study:
            continue
        line = (f"{r.experiment}: {r.mean:.2f}% test{_mark(r)} (mean of {r.n}) after "
                f"{'/'.join(map(str, r.epochs))} epochs, {_duration(r.wall_seconds)} of training per run"
                + (f" on {r.device}" if r.device else ""))
        if study:
            top = max(study, key=lambda x: x.mean)
            line += (f"; the study's best row here, {top.experiment}, has {top.mean:.2f}%{_mark(top)} "
                     f"after {'/'.join(map(str, top.epochs))} epochs ({_duration(top.wall_seconds)} per run)")
        refs = [x for x in study if x.seed_report]
        if refs:
            best = max(refs, key=lambda x: x.seed_report)
            line += (f"; of these rows, the seed report's highest figure is {best.seed_report:.2f}% "
                     f"({best.experiment}, {load_preset(best.preset).epochs} epochs)")
        lines.append(line + ".")
    return lines


def _beyond_noise(rep: dict) -> set[tuple[str, str]]:
    """(experiment, published by) of every difference beyond noise: what the tables set in bold."""
    return {(c.experiment, c.source) for c in rep.get("fidelity", []) if c.beyond}


def bold_note(rep: dict) -> str:
    """The line under a results table whose bold differences are beyond noise ("" when none is)."""
    rep = typed(rep)
    if not _beyond_noise(rep):
        return ""
    return (f"A difference in bold is beyond noise ({TOLERANCE} points, or twice the standard deviation where "
            "n > 1): see the section \"Against the published figures\".")


def _acc(r: Row) -> str:
    """A row's accuracy cell: mean ± std, and its mark (†: scaled)."""
    return f"{r.mean:.2f}" + (f" ± {r.std:.2f}" if r.std is not None else "") + _mark(r)


def results_table(rep: dict) -> tuple[list[str], list[list]]:
    """The results table: a difference beyond noise is a Cell with `beyond` set, the comparable
    column a Cell with its tone."""
    rep = typed(rep)
    head = ["experiment", "test acc % (mean ± std)", "n", "seed report", "diff", "article", "diff",
            "epochs", "wall / run", "median epoch", "arithmetic", "comparable"]
    body = []
    beyond = _beyond_noise(rep)
    for r in rep["rows"]:
        m = _mark(r)
        diff = [Cell(_f(r.diff(key), signed=True) + (m if r.diff(key) is not None else ""),
                     beyond=(r.experiment, label) in beyond) for key, label in REFS]
        body.append([r.experiment + (" ‡" if r.beyond_study else ""), _acc(r), str(r.n), _f(r.seed_report),
                     diff[0], _f(r.article), diff[1],
                     "/".join(map(str, r.epochs)), _duration(r.wall_seconds),
                     _f(r.median_epoch_seconds, "{:.0f} s"),
                     r.arithmetic,
                     Cell("yes", tone="yes") if r.comparable else Cell("no (scaled)", tone="no")])
    return head, body


def _ci(ci) -> str:
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def stats_table(rep: dict) -> tuple[list[str], list[list[str]]]:
    """Each comparison by both tests, Welch's and (where the rows are pairs by seed) the paired one, and
    the verdict of the test it names."""
    rep = typed(rep)
    head = ["A", "B", "claim", "n A / B", "A - B (pp)", "95% CI (Welch)", "p (Welch)", "paired A - B",
            "95% CI (paired)", "p (paired)", "test of the verdict", "verdict"]
    body = []
    for c in rep["comparisons"]:
        verdict = "distinguishable" if c.distinguishable else "not distinguishable from noise"
        notes = []
        if not c.same_epochs:
            notes.append("different epochs")
        if not c.comparable:
            notes.append("scaled runs")
        if notes:
            verdict += f" ({', '.join(notes)})"
        w, pt = c.welch, c.paired
        test = (f"paired by seed ({pt['n']} pairs)" if pt else f"Welch ({c.pairing})")
        body.append([c.a, c.b, c.claim, f"{c.n_a} / {c.n_b}", _f(w["diff"], signed=True),
                     _ci(w["ci"]), _f(w["p"], "{:.3g}"), _f(pt["diff"], signed=True) if pt else "-",
                     _ci(pt["ci"]) if pt else "-", _f(pt["p"], "{:.3g}") if pt else "-", test, verdict])
    return head, body


STATS_TEXT = ("A", "B", "claim", "test of the verdict", "verdict")


def text_columns(head: list[str]) -> tuple[int, ...]:
    """The columns of a statistics table set as text, not numbers (compare's included)."""
    return tuple(i for i, h in enumerate(head) if h in STATS_TEXT or h.startswith(("settings of", "within")))


def paired_table(rep: dict) -> tuple[list[str], list[list[str]]]:
    """The paired tests by seed, pair by pair: each seed's difference, their mean, its 95% interval
    (t distribution, n - 1 df), t and p."""
    rep = typed(rep)
    head = ["A", "B", "seeds", "A - B by seed (pp)", "mean A - B", "95% CI", "t", "df", "p"]
    body = [[c.a, c.b, ", ".join(map(str, pt["seeds"])), ", ".join(f"{d:+.2f}" for d in pt["diffs"]),
             _f(pt["diff"], signed=True), _ci(pt["ci"]), _f(pt["t"]), str(pt["df"]), _f(pt["p"], "{:.3g}")]
            for c in rep["comparisons"] if (pt := c.paired)]
    return head, body


TESTS_TEXT = ("Each difference in mean test accuracy (percentage points) has its 95% confidence interval from "
              "Welch's t-test over seeds and, where the two sides are pairs by seed, from the paired t-test on "
              "the per-seed differences: runs of one seed and one network (the same model settings) start from "
              "the same weights and see the same batches, so two rows of one network that share two seeds or "
              "more are pairs. The verdict uses the paired test where there are pairs, Welch's otherwise, and "
              "says which.")


def fidelity_table(rep: dict) -> tuple[list[str], list[list[str]]]:
    rep = typed(rep)
    head = ["experiment", "published by", "published %", "ours %", "n", "diff", "limit", "epoch to epoch",
            "verdict"]
    body = [[c.experiment, c.source, _f(c.published), _f(c.ours), str(c.n),
             _f(c.diff, signed=True), f"±{c.limit:.2f}",
             "-" if c.late_epoch_sd is None else f"sd {c.late_epoch_sd:.2f}",
             _verdict(c, rep.get("findings") or {})]
            for c in rep.get("fidelity", [])]
    return head, body


def _verdict(check: Check, findings: dict) -> str:
    if not check.beyond:
        return "within"
    return "BEYOND NOISE: finding below" if check.experiment in findings else "BEYOND NOISE: investigate"


def fidelity_summary(rep: dict) -> str:
    rep = typed(rep)
    checks = rep.get("fidelity", [])
    if not checks:
        return "No comparable row with a published figure yet: nothing to check."
    beyond = [c for c in checks if c.beyond]
    rows = len({c.experiment for c in checks})
    if not beyond:
        return f"All {len(checks)} checks of the {rows} comparable row(s) are within the limit."
    found = rep.get("findings") or {}
    open_ = [c for c in beyond if c.experiment not in found]
    return (f"{len(beyond)} of {len(checks)} checks are beyond the limit: "
            + ", ".join(f"{c.experiment} against the {c.source} ({c.diff:+.2f})" for c in beyond) + ". "
            + (f"{len(beyond) - len(open_)} of them with a finding below, {len(open_)} without one yet."
               if found else "None has a finding yet: each is under investigation."))


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _settings_line(rep: dict) -> str:
    studies = rep.get("studies") or [{"dir": None, "meta": rep["meta"]}]
    parts = []
    for st in studies:  # with several folders, each folder's settings after its name
        settings = st["meta"].get("settings", {})
        invs = st["meta"].get("invocations", [])
        wall = sum(i.get("wall_seconds") or 0 for i in invs)
        open_ = sum(i.get("finished") is None for i in invs)
        parts += [("" if st["dir"] is None else f"{st['dir']}: ")
                  + f"overrides: {' '.join(settings.get('overrides') or []) or 'none'}",
                  f"epochs scale: {settings.get('epochs_scale', 1.0)}",
                  f"quick: {'yes' if settings.get('quick') else 'no'}",
                  f"{len(invs)} invocation(s)" + (f", {_duration(wall)} wall time in those that ended"
                                                  if len(invs) > open_ else "")
                  + (f", {open_} still running or interrupted" if open_ else "")]
    runs = sum(r.wall_seconds * r.n for r in rep["rows"])
    parts.append(f"the finished runs' own training time adds up to {_duration(runs)}")
    return "; ".join(parts)


NOTE_SCALED = ("† scaled run (epochs or training subset changed from the preset): not comparable to the "
               "published figures; the differences show the pipeline, not the method.")


def md_cell(cell) -> str:
    """A cell in Markdown: a difference beyond noise in bold."""
    text = text_of(cell).replace("|", "\\|")
    return f"**{text}**" if getattr(cell, "beyond", False) else text


def md_table(head: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def render_md(rep: dict) -> str:
    rep = typed(rep)
    table = md_table
    figs = rep["figures"]
    md = [f"# CIFAR-10 study report: {rep['study_dir']}", "", f"Created {rep['created']}. {_settings_line(rep)}.", ""]
    if any(not r.comparable for r in rep["rows"]):
        md += [f"**{NOTE_SCALED}**", ""]
    md += ["## Results", "", "Test accuracy on the 10,000 CIFAR-10 test images, in %; diff is ours minus "
           "the published figure.", "", table(*results_table(rep)), ""]
    if bold_note(rep):
        md += [bold_note(rep), ""]
    beyond = beyond_lines(rep)
    if beyond:
        md += [NOTE_BEYOND, ""] + [f"- {b}" for b in beyond] + [""]
    if rep["unfinished"]:
        md += [f"Not finished (not in the table): {', '.join(rep['unfinished'])}", ""]
    if rep.get("untested"):
        md += [f"{UNTESTED_LINE}: {', '.join(rep['untested'])}", ""]
    if rep.get("mixed"):
        md += [f"{MIXED_LINE}: {', '.join(rep['mixed'])}", ""]
    md += ["## Against the published figures", "", RULE, "", f"**{fidelity_summary(rep)}**", ""]
    if rep.get("fidelity"):
        md += [table(*fidelity_table(rep)), ""]
    if rep.get("findings"):
        md += ["### What the investigation found", ""]
        for name, text in rep["findings"].items():
            md += [f"**{name}.** {text}", ""]
    md += ["## Experiments and the choices where the sources were silent", "",
           table(["experiment", "description"], [[r.experiment, r.description] for r in rep["rows"]]), ""]
    md += ["## Is the difference more than run-to-run noise?", ""]
    if rep["comparisons"]:
        md += [f"{TESTS_TEXT} Both sides need at least two seeds.", "", table(*stats_table(rep)), ""]
        if paired_table(rep)[1]:
            md += ["The paired tests by seed:", "", table(*paired_table(rep)), ""]
    else:
        md += ["No pair of experiments has two or more seeds each; run `cifarlab study --seeds 2` or more.", ""]
    if rep.get("best_error") and not rep["best"]:
        md += ["Best run not analysed:", "", "```text", rep["best_error"], "```", ""]  # a data error has many lines
    if rep["best"]:
        b = rep["best"]
        md += [f"## {_best_title(b)}", ""] + ([_passed_over(b), ""] if b.get("passed_over") else []) + [
               f"![per-class accuracy](report_files/{figs['best-per-class']})", "",
               f"![confusion matrix](report_files/{figs['best-confusion']})", ""]
    groups = [k for k in figs if k.startswith("group-")]
    if groups:
        md += ["## Groups compared by the study", ""] + [f"![{k}](report_files/{figs[k]})\n" for k in groups]
    md += ["## Learning curves per experiment", ""]
    md += [f"### {r.experiment}\n\n![{r.experiment}](report_files/{figs['curves-' + r.experiment]})\n"
           for r in rep["rows"] if f"curves-{r.experiment}" in figs]
    return "\n".join(md) + "\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
 padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right;vertical-align:top}
th{background:#f0f3f7}td:first-child,th:first-child{text-align:left}
td.text,th.text{text-align:left}tr:nth-child(even){background:#fafafa}
.note{background:#fff6dd;border-left:4px solid #e0b000;padding:.5em 1em}
.yes{color:#1a7f37}.no{color:#b35900}.beyond{color:#b31d28}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:1em}
figure{margin:0}figcaption{font-size:.9em;color:#555}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_table(head: list[str], body: list[list[str]], text_cols=(), cls: str = "") -> str:
    e = html.escape
    h = "".join(f'<th class="text">{e(c)}</th>' if i in text_cols else f"<th>{e(c)}</th>"
                for i, c in enumerate(head))
    rows = []
    for row in body:
        cells = []
        for i, c in enumerate(row):
            klass = "text" if i in text_cols else ""
            if getattr(c, "tone", ""):
                klass += f" {c.tone}"
            text = e(text_of(c))
            if getattr(c, "beyond", False):  # a difference beyond noise
                text, klass = f"<b>{text}</b>", klass + " beyond"
            cells.append(f'<td class="{klass.strip()}">{text}</td>' if klass else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _inline_html(text: str) -> str:
    """Markdown's `code` and [text](address) spans of a finding, the rest escaped."""
    import re
    out = []
    for part in re.split(r"(`[^`]+`|\[[^\]]+\]\([^)\s]+\))", text):
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        elif m := re.fullmatch(r"\[([^\]]+)\]\(([^)\s]+)\)", part):
            out.append(f'<a href="{html.escape(m[2])}">{html.escape(m[1])}</a>')
        else:
            out.append(html.escape(part))
    return "".join(out)


def render_html(rep: dict, study_dir: Path) -> str:
    rep = typed(rep)
    e = html.escape
    fig_dir = Path(study_dir) / "report_files"
    figs = rep["figures"]
    table = html_table
    parts = [f"<h1>CIFAR-10 study report</h1><p>{e(rep['study_dir'])}: created {e(rep['created'])}. "
             f"{e(_settings_line(rep))}.</p>"]
    if any(not r.comparable for r in rep["rows"]):
        parts.append(f'<p class="note">{e(NOTE_SCALED)}</p>')
    parts.append("<h2>Results</h2><p>Test accuracy on the 10,000 CIFAR-10 test images, in %; diff is ours "
                 "minus the published figure.</p>")
    parts.append(table(*results_table(rep), cls="results"))
    if bold_note(rep):
        parts.append(f'<p class="note">{e(bold_note(rep))}</p>')
    beyond = beyond_lines(rep)
    if beyond:
        parts.append(f'<p class="note">{e(NOTE_BEYOND)}</p><ul>' + "".join(f"<li>{e(b)}</li>" for b in beyond)
                     + "</ul>")
    if rep["unfinished"]:
        parts.append(f"<p>Not finished (not in the table): {e(', '.join(rep['unfinished']))}</p>")
    if rep.get("untested"):
        parts.append(f"<p>{e(UNTESTED_LINE)}: {e(', '.join(rep['untested']))}</p>")
    if rep.get("mixed"):
        parts.append(f"<p>{e(MIXED_LINE)}: {e(', '.join(rep['mixed']))}</p>")
    parts.append(f"<h2>Against the published figures</h2><p>{e(RULE)}</p><p><b>{e(fidelity_summary(rep))}</b></p>")
    if rep.get("fidelity"):
        parts.append(table(*fidelity_table(rep), text_cols=(0, 1, 7), cls="fidelity"))
    if rep.get("findings"):
        parts.append("<h3>What the investigation found</h3>")
        for name, text in rep["findings"].items():
            paras = [p for p in text.split("\n\n") if p.strip()]
            parts.append("".join(f"<p>{'<b>' + e(name) + '.</b> ' if i == 0 else ''}{_inline_html(p)}</p>"
                                 for i, p in enumerate(paras)))
    parts.append("<h2>Experiments and the choices where the sources were silent</h2>")
    parts.append(table(["experiment", "description"], [[r.experiment, r.description] for r in rep["rows"]],
                       text_cols=(1,), cls="presets"))
    parts.append("<h2>Is the difference more than run-to-run noise?</h2>")
    if rep["comparisons"]:
        parts.append(f"<p>{e(TESTS_TEXT)} Both sides need at least two seeds.</p>")
        head, body = stats_table(rep)
        parts.append(table(head, body, text_cols=text_columns(head), cls="stats"))
        if paired_table(rep)[1]:
            parts.append("<p>The paired tests by seed:</p>"
                         + table(*paired_table(rep), text_cols=(0, 1, 2, 3), cls="paired"))
    else:
        parts.append("<p>No pair of experiments has two or more seeds each; run <code>cifarlab study --seeds 2"
                     "</code> or more.</p>")
    if rep.get("best_error") and not rep["best"]:
        parts.append(f"<p>Best run not analysed:</p><pre>{e(rep['best_error'])}</pre>")
    if rep["best"]:
        b = rep["best"]
        parts.append(f"<h2>{e(_best_title(b))}</h2>")
        if b.get("passed_over"):
            parts.append(f"<p>{e(_passed_over(b))}</p>")
        parts.append("<div class=grid>")
        for k, cap in (("best-per-class", "accuracy per class"), ("best-confusion", "confusion matrix")):
            parts.append(f"<figure>{_img(fig_dir / figs[k], cap)}<figcaption>{e(cap)}</figcaption></figure>")
        parts.append("</div>")
    groups = [k for k in figs if k.startswith("group-")]
    if groups:
        parts.append("<h2>Groups compared by the study</h2><div class=grid>")
        parts += [f"<figure>{_img(fig_dir / figs[k], k)}</figure>" for k in groups]
        parts.append("</div>")
    parts.append("<h2>Learning curves per experiment</h2><div class=grid>")
    for r in rep["rows"]:
        k = f"curves-{r.experiment}"
        if k in figs:
            parts.append(f"<figure>{_img(fig_dir / figs[k], r.experiment)}"
                         f"<figcaption>{e(r.experiment)}: {e(r.description)}</figcaption></figure>")
    parts.append("</div>")
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>CIFAR-10 study report</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(study_dir, data_path=None, out_dir=None) -> dict:
    """report.md, report.html and report.json of a study folder (or a list of them) into OUT_DIR (by
    default the one study folder)."""
    study_claims()  # a damaged claims.yaml is said before anything is written
    out_dir = Path(out_dir or study_dirs(study_dir)[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = collect(study_dir, data_path, out_dir=out_dir)
    from ..checkpoint import atomic_write_text
    atomic_write_text(out_dir / "report.md", render_md(rep))
    atomic_write_text(out_dir / "report.html", render_html(rep, out_dir))
    atomic_write_text(out_dir / "report.json", json.dumps(rep, indent=2, default=to_json))
    return rep


README_BEGIN = "<!-- results: begin (written by `cifarlab report STUDY_DIR --readme README.md`) -->"
README_END = "<!-- results: end -->"


def parse_expect(text: str | None) -> dict[str, int]:
    """"vgg3:3,combined" -> {"vgg3": 3, "combined": 1} (the syntax of `study --only`)."""
    return {k: v or 1 for k, v in preset_seeds(text, "--expect").items()}


def planned(rep: dict, expect: str | None = None) -> dict[str, list[int]]:
    """preset -> the seeds the study is meant to have: every invocation's presets x seeds in
    study.json, plus `expect` ("vgg3:3,combined" = vgg3 seeds 0-2, combined seed 0)."""
    out = _planned(rep["meta"], rep.get("study_dir"), expect)
    for r in rep["rows"]:
        out.setdefault(r.experiment, set()).update(r.seeds)
    return {n: sorted(out[n]) for n in study_order(out)}


def _planned(meta: dict, study_dir, expect: str | None = None) -> dict[str, set]:
    """preset -> the seeds one study folder is meant to have (its study.json, `expect`, the runs begun)."""
    out: dict[str, set] = {}
    for inv in meta.get("invocations", []):
        o = inv.get("options") or {}
        for name in o.get("presets") or []:
            n = (o.get("seeds_for") or {}).get(name) or o.get("seeds") or 1
            out.setdefault(name, set()).update(range(n))
    for name, n in parse_expect(expect).items():
        out.setdefault(name, set()).update(range(n))
    begun = Path(study_dir).glob("runs/*/seed*") if study_dir else ()
    for run_dir in begun:  # begun, not finished: meant to be there
        if run_dir.name[4:].isdigit() and not (run_dir / "summary.json").is_file():
            out.setdefault(run_dir.parent.name, set()).add(int(run_dir.name[4:]))
    return out


def _missing(rep: dict, expect: str | None = None) -> dict[str, dict]:
    """label -> {"preset", "where": {study folder: [seeds planned, not in the table]}}. A seed goes with
    the row of its preset in its folder; where the folder has none, with the label its folder's rows share
    (a folder of amp=native runs: "combined amp=native"), else the preset's name. `expect` is the first
    folder's."""
    studies = rep.get("studies") or [{"dir": rep["study_dir"], "meta": rep["meta"]}]
    out = {}
    for i, st in enumerate(studies):
        folder = st["dir"]
        seeds = {}  # label -> the seeds finished in this folder
        for r in rep["rows"]:
            for run, seed in zip(r.runs, r.seeds):
                if str(Path(run).parents[2]) == str(Path(folder)):
                    seeds.setdefault(r.experiment, set()).add(seed)
        mine = [r for r in rep["rows"] if r.experiment in seeds]
        shared = {tuple(r.variant) for r in mine}
        for name, want in _planned(st["meta"], folder, expect if i == 0 else None).items():
            own = [r.experiment for r in mine if r.preset == name]
            done = set().union(*(seeds[k] for k in own))
            miss = sorted(s for s in want if s not in done)
            if not miss:
                continue
            label = own[0] if own else " ".join([name, *next(iter(shared))]) if len(shared) == 1 else name
            out.setdefault(label, {"preset": name, "where": {}})["where"][folder] = miss
    return out


def _planned_only(rep: dict) -> list[str]:
    """The runs a folder's study.json plans that have no run folder there, as the report lists unfinished
    runs (with several folders, with their folder's path): a records folder keeps the records of finished
    runs only, so a run still going elsewhere is known there by its plan, as the README table knows it."""
    several = bool(rep.get("studies"))
    out = []
    for m in _missing(rep).values():
        for folder, seeds in m["where"].items():
            for seed in seeds:
                run = Path("runs") / m["preset"] / f"seed{seed}"
                if not (Path(folder) / run).exists():  # a folder begun or untested is listed by load_runs
                    out.append(str(Path(folder) / run) if several else str(run))
    return out


def _short_device(device: str) -> str:
    for junk in ("(R)", "(TM)", " Processor", " CPU"):
        device = device.replace(junk, "")
    return " ".join(device.split())


_TEMPLATES = None


def render_template(name: str, **fields) -> str:
    """Render templates/`name` with `fields`: a field the template names and `fields` lacks fails
    (StrictUndefined); HTML templates escape what they insert."""
    global _TEMPLATES
    if _TEMPLATES is None:
        import jinja2
        _TEMPLATES = jinja2.Environment(
            loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
            autoescape=jinja2.select_autoescape(["html.j2"]), undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True)
    return _TEMPLATES.get_template(name).render(**fields)


def readme_table(rep: dict, expect: str | None = None) -> str:
    """The results as a Markdown table for a README: every planned run, finished or not (a run
    that is missing says so; nothing is filled in)."""
    rep = typed(rep)
    from ..config import load_preset, preset_names
    rows = {r.experiment: r for r in rep["rows"]}
    head = ["preset", "epochs", "test acc %", "n", "seed report", "diff", "article", "diff", "wall / run",
            "arithmetic", "device"]
    align = ["---"] + ["---:"] * 8 + ["---", "---"]
    body = []
    beyond = _beyond_noise(rep)

    def diff(name, key, label):
        return md_cell(Cell(_f(rows[name].diff(key), signed=True), beyond=(name, label) in beyond))

    missing = _missing(rep, expect)
    several = bool(rep.get("studies"))
    presets = study_order([r.preset for r in rep["rows"]] + [m["preset"] for m in missing.values()])
    for preset in presets:
        labels = [r.experiment for r in rep["rows"] if r.preset == preset]
        labels += [k for k, m in missing.items() if m["preset"] == preset and k not in labels]
        for name in labels:
            r = rows.get(name)
            if r:
                cells = [name, "/".join(map(str, r.epochs)), _acc(r), str(r.n), _f(r.seed_report),
                         diff(name, *REFS[0]), _f(r.article), diff(name, *REFS[1]),
                         _duration(r.wall_seconds), r.arithmetic, _short_device(r.device)]
                body.append(cells)
            if name not in missing:
                continue
            said = []
            for folder, seeds in missing[name]["where"].items():
                where, untested, mixed = [], [], []
                at = f" in {folder}" if several else ""
                for sd in seeds:
                    run = f"runs/{preset}/seed{sd}"
                    key = str(Path(folder) / run) if several else run
                    if key in rep.get("untested", ()):
                        untested.append(f"seed {sd}")  # finished, but trained with test=false (load_runs)
                        continue
                    if any(m.split(" (")[0] == key for m in rep.get("mixed", ())):
                        mixed.append(f"seed {sd}")  # finished in two arithmetics: no protocol row (load_runs)
                        continue
                    k = epochs_done(Path(folder) / run)
                    where.append(f"seed {sd}" + (f" (at epoch {k})" if k else ""))
                said += ([f"not finished: {', '.join(where)}{at}"] if where else []) + \
                    ([f"trained without the test set: {', '.join(untested)}{at}"] if untested else []) + \
                    ([f"computed in two arithmetics: {', '.join(mixed)}{at}"] if mixed else [])
            spec = load_preset(preset) if preset in preset_names() else None
            # the published figures once per preset: on the finished seeds' row when there is one
            ref = spec.reference if spec else {}
            refs = ["", ""] if r else [_f(ref.get(k)) for k in ("seed_report", "article")]
            cells = [name, str(spec.epochs if spec else "?"), "; ".join(said), "", refs[0],
                     "", refs[1], "", "", "", ""]
            body.append(cells)
    note = (f"A difference in bold is beyond noise ({TOLERANCE} points, or twice the standard deviation "
            "where n > 1): see the report's section \"Against the published figures\"." if beyond else "")
    return render_template("readme_table.md.j2", head=head, align=align, body=body, note=note)


def update_readme(readme, table: str) -> None:
    """Replace the text between README_BEGIN and README_END in `readme` with `table`."""
    from ..checkpoint import atomic_write_text
    readme = Path(readme)
    check_readme(readme)
    text = readme.read_text()
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write_text(readme, f"{head}{README_BEGIN}\n{table}\n{README_END}{tail}")


def check_readme(readme) -> None:
    """A file with one results block, or a FileNotFoundError that says what to add."""
    readme = Path(readme)
    if not readme.is_file():
        raise FileNotFoundError(f"--readme {readme}: no such file; name a README that has a results block")
    text = readme.read_text()
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1:
        raise FileNotFoundError(f"{readme} needs one results block: add a line {README_BEGIN} and a line "
                                f"{README_END} where the table belongs")


# What a study's records are: everything needed to read and re-run it, no checkpoint.
RECORD_FILES = ("study.json", FINDINGS, "report.md", "report.html", "report.json", "report_files/*.png",
                "runs/*/seed*/config.yaml", "runs/*/seed*/metrics.csv", "runs/*/seed*/summary.json",
                "runs/*/seed*/curves.png", "runs/*/seed*/train.log")


def copy_records(study_dir, dest, report_dir=None) -> list[Path]:
    """Copy the study's records (RECORD_FILES: settings, configs, metrics, summaries, curves, logs and
    the report, from `report_dir` where it was written elsewhere; never checkpoints) of its finished runs
    into `dest`, replacing older copies; returns the files written."""
    from ..files import atomic_write
    study_dir, dest = Path(study_dir).resolve(), Path(dest).resolve()
    report_dir = Path(report_dir).resolve() if report_dir else study_dir
    if dest == study_dir:
        raise ValueError(f"--records {dest} is the study folder itself; name another folder")
    written = []
    for pattern in RECORD_FILES:
        root = report_dir if pattern.startswith("report") else study_dir
        for f in sorted(root.glob(pattern)):
            if f.parts[len(root.parts)] == "runs" and not (f.parent / "summary.json").is_file():
                continue  # a run still going: its records come when it has finished
            target = dest / f.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            data = f.read_bytes()
            atomic_write(target, lambda out, data=data: out.write(data))
            written.append(target)
    for old in (dest / "report_files").glob("*.png"):
        if old not in written:  # a figure an earlier report drew and this one does not (e.g. a best run
            old.unlink()        # that could not be analysed this time) must not sit beside it
    return written


def latest_study(root="studies") -> Path:
    found = sorted(Path(root).glob("*/study.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no study under {root}/; run `cifarlab study` or name a study folder")
    return found[-1].parent
