"""The report of a small real study: rows, numbers equal to the runs, figures, statistics, a browser."""
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def report(small_study):
    p = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(small_study["dir"])],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    d = small_study["dir"]
    return {"dir": d, "json": json.loads((d / "report.json").read_text()),
            "html": (d / "report.html").read_text(), "md": (d / "report.md").read_text(), "out": p.stdout}


def summaries(study, preset):
    return [json.loads(p.read_text()) for p in sorted((study / "runs" / preset).glob("seed*/summary.json"))]


@pytest.mark.slow
def test_rows_follow_the_study_and_match_the_runs(report):
    rows = report["json"]["rows"]
    assert [r["experiment"] for r in rows] == ["vgg3", "dropout", "bn_only"]  # the study's order
    for r in rows:
        accs = [100 * s["test_acc"] for s in summaries(report["dir"], r["experiment"])]
        assert r["n"] == 2 and r["test_acc"] == accs
        assert r["mean"] == pytest.approx(np.mean(accs), abs=1e-9)
        assert r["std"] == pytest.approx(np.std(accs, ddof=1), abs=1e-9)
        assert r["epochs"] == [3] and r["comparable"] is False
        cell = f"{r['mean']:.2f} ± {r['std']:.2f}†"
        assert cell in report["html"] and cell in report["md"]
    vgg3 = rows[0]
    assert (vgg3["seed_report"], vgg3["article"]) == (73.81, 73.50)
    assert vgg3["diff_seed_report"] == pytest.approx(vgg3["mean"] - 73.81)
    bn_only = rows[2]
    assert bn_only["article"] is None  # no published figure: shown as "-"
    assert re.search(r"<td>bn_only</td><td>[^<]+</td><td>2</td><td>83\.94</td><td>[-+][\d.]+†</td>"
                     r"<td>-</td><td>-</td>", report["html"])
    assert "not comparable" in report["html"] and "no (scaled)" in report["md"]
    assert report["json"]["fidelity"] == []  # scaled runs are not held against the published figures
    assert "No comparable row with a published figure yet" in report["md"]


@pytest.mark.slow
def test_a_recipe_beyond_the_study_is_labelled_with_its_time(small_study, tmp_path):
    from conftest import STUDY_ARGS
    d = tmp_path / "s"
    shutil.copytree(small_study["dir"], d)
    overrides = [a for a in STUDY_ARGS[STUDY_ARGS.index("--workers") + 2:]]
    p = subprocess.run([sys.executable, "-m", "cifarlab", "study", "--out", str(d), "--only", "fast94",
                        "--seeds", "1", "--workers", "1", *overrides], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(d)], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {r["experiment"]: r for r in json.loads((d / "report.json").read_text())["rows"]}
    assert list(rows) == ["vgg3", "dropout", "bn_only", "fast94"]  # after the study's own rows
    assert rows["fast94"]["beyond_study"] and not any(rows[n]["beyond_study"] for n in ("vgg3", "dropout", "bn_only"))
    md, html = (d / "report.md").read_text(), (d / "report.html").read_text()
    assert "| fast94 ‡ |" in md and "<td>fast94 ‡</td>" in html and "<td>vgg3</td>" in html
    assert "beyond the study" in md and "beyond the study" in html
    f = rows["fast94"]
    top = max((r for n, r in rows.items() if n != "fast94"), key=lambda r: r["mean"])
    line = next(x for x in md.splitlines() if x.startswith("- fast94:"))
    assert f"{f['mean']:.2f}% test" in line and "after 3 epochs" in line
    assert f"{top['experiment']}, has {top['mean']:.2f}%" in line and "the seed report's highest figure is" in line


@pytest.mark.slow
def test_statistics_start_with_the_studys_claims(report):
    from scipy import stats
    comps = report["json"]["comparisons"]
    first = comps[0]
    assert (first["a"], first["b"]) == ("dropout", "vgg3")  # the only claim with both sides present
    a = [100 * s["test_acc"] for s in summaries(report["dir"], "dropout")]
    b = [100 * s["test_acc"] for s in summaries(report["dir"], "vgg3")]
    t, p = stats.ttest_ind(a, b, equal_var=False)
    assert first["p"] == pytest.approx(p) and first["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    lo, hi = first["ci"]
    assert lo < first["diff"] < hi
    # then bn_only against the preset it varies is absent (combined was not run)
    assert all({c["a"], c["b"]} <= {"vgg3", "dropout", "bn_only"} for c in comps)
    assert "Welch" in report["html"] and f"{p:.3g}" in report["md"]



def test_groups_without_spread_give_a_verdict_and_plain_json():
    from cifarlab.reporting.report import welch
    same = welch([74.0, 74.0], [74.0, 74.0])
    apart = welch([75.0, 75.0], [74.0, 74.0])
    assert (same["p"], apart["p"], apart["diff"], apart["ci"]) == (1.0, 0.0, 1.0, (1.0, 1.0))
    for w in (same, apart):  # no t or df without noise, written as null, never NaN
        assert w["t"] is None and w["df"] is None
        json.loads(json.dumps(w), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))

@pytest.mark.slow
def test_figures_are_embedded_and_the_best_run_is_measured(report):
    html = report["html"]
    imgs = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    figs = report["json"]["figures"]
    # 3 curves, the regulariser overlay (vgg3, dropout), per-class and confusion of the best run
    assert set(figs) == {"curves-vgg3", "curves-dropout", "curves-bn_only", "group-regularisers",
                         "best-per-class", "best-confusion"}
    assert len(imgs) == len(figs) == html.count("<img ")
    import base64
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert "http://" not in html and "https://" not in html and "file:" not in html  # opens offline
    for name in figs.values():
        assert f"report_files/{name}" in report["md"] and (report["dir"] / "report_files" / name).is_file()
    best = report["json"]["best"]
    runs = {f"{p}/seed{s['seed']}": s for p in ("vgg3", "dropout", "bn_only") for s in summaries(report["dir"], p)}
    top = max(runs, key=lambda k: runs[k]["test_acc"])
    assert best["name"] == top
    m = np.array(best["matrix"])
    assert m.sum() == 10_000 and (m.sum(1) == 1000).all()  # CIFAR-10's test set: 1,000 per class
    assert np.trace(m) / 10_000 == pytest.approx(runs[top]["test_acc"], abs=3e-4)  # its own summary
    assert best["per_class"]["cat"] == pytest.approx(m[3, 3] / 1000)
    # as the run's summary.json recorded it at the end of training, and measured again from its checkpoint
    from cifarlab.reporting.report import best_run_analysis, load_run
    run = load_run(report["dir"] / "runs" / top)
    assert best["source"] == "summary.json" and best["matrix"] == run["summary"]["test_confusion"]["matrix"]
    del run["summary"]["test_confusion"]
    again = best_run_analysis(run)
    assert again["source"] == "checkpoint.pt" and np.array(again["matrix"]).sum() == 10_000
    assert np.abs(np.array(again["matrix"]) - m).sum() <= 6  # the same network; summation order aside


@pytest.mark.slow
def test_a_best_run_measured_from_its_checkpoint_sees_the_test_set_as_its_summary_did(tmp_path):
    """A run tested with test-time augmentation (fast94's tta=2) and recorded before summaries kept
    the confusion matrix: measured again from its checkpoint, with the same views."""
    from cifarlab.config import apply_overrides, load_preset
    from cifarlab.reporting.report import best_run_analysis, load_run
    from cifarlab.train import train
    cfg = apply_overrides(load_preset("vgg1"), ["widths=[8]", "dense=16", "subset=1000", "epochs=1", "tta=2"])
    train(cfg, tmp_path / "runs" / "vgg1" / "seed0", progress=False, log=lambda *a: None)
    run = load_run(tmp_path / "runs" / "vgg1" / "seed0")
    kept = run["summary"].pop("test_confusion")["matrix"]
    again = best_run_analysis(run)
    assert again["source"] == "checkpoint.pt"
    assert again["test_acc"] == pytest.approx(run["summary"]["test_acc"], abs=3e-4)
    assert np.abs(np.array(again["matrix"]) - np.array(kept)).sum() <= 6  # summation order aside


@pytest.mark.slow
def test_a_best_run_measured_from_its_checkpoint_computes_in_the_runs_arithmetic(tmp_path):
    """A run trained and tested in bf16 with its own evaluation batches: measured again from its checkpoint
    (as for a record without the confusion matrix), in bf16 and those batches, it gives the very matrix its
    summary kept, on this machine."""
    from cifarlab.config import apply_overrides, load_preset
    from cifarlab.reporting.report import best_run_analysis, load_run
    from cifarlab.train import train
    cfg = apply_overrides(load_preset("vgg1"), ["widths=[8]", "dense=16", "subset=1000", "epochs=1", "amp=bf16",
                                                "eval_batch_size=256"])
    train(cfg, tmp_path / "runs" / "vgg1" / "seed0", progress=False, log=lambda *a: None)
    run = load_run(tmp_path / "runs" / "vgg1" / "seed0")
    assert run["summary"]["arithmetic"] == "bf16"
    kept = run["summary"].pop("test_confusion")["matrix"]
    again = best_run_analysis(run)
    assert again["source"] == "checkpoint.pt" and again["matrix"] == kept
    assert again["test_acc"] == run["summary"]["test_acc"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(*args):
    profile = tempfile.mkdtemp()
    try:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM, reason="chromium not installed (.ci/run installs it)")
def test_report_renders_in_a_headless_browser(report, tmp_path):
    from PIL import Image
    url = (report["dir"] / "report.html").resolve().as_uri()
    shot = tmp_path / "report.png"
    p = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert shot.is_file(), p.stderr
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2000, 1280)
    assert img.std() > 20 and (img < 128).mean() > 0.01  # text, tables and figures, not a blank page
    dom = _chromium("--dump-dom", "--virtual-time-budget=5000", url).stdout
    assert dom.count("<table") == 3  # results, experiments, statistics
    assert dom.count("<img ") == len(report["json"]["figures"])
    assert "vgg3" in dom and "Welch" in dom
    # every image decoded: the browser reports its natural width once loaded
    probe = tmp_path / "probe.html"
    probe.write_text(report["html"].replace(
        "</body>", "<script>document.body.setAttribute('data-loaded', [...document.images]"
                   ".filter(i => i.complete && i.naturalWidth > 0).length)</script></body>"))
    dom = _chromium("--dump-dom", "--virtual-time-budget=5000", probe.as_uri()).stdout
    assert f'data-loaded="{len(report["json"]["figures"])}"' in dom


@pytest.mark.slow
def test_each_row_says_its_arithmetic(report):
    for r in report["json"]["rows"]:
        assert r["arithmetic"] == "fp32"  # the study's presets on a CPU
        assert all(s["arithmetic"] == "fp32" for s in summaries(report["dir"], r["experiment"]))
    assert "<th>arithmetic</th>" in report["html"] and "| arithmetic |" in report["md"]


@pytest.mark.slow
def test_run_records_name_their_code_and_device(report):
    for s in summaries(report["dir"], "vgg3"):
        code = s["code"]
        assert set(code) >= {"commit", "clean", "version"}
        assert code["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", code["commit"])
        assert s["segments"][0]["from_epoch"] == 0 and s["segments"][-1]["code"] == code
        assert "family" in s["device"] or s["device"].startswith("NVIDIA")


@pytest.mark.slow
def test_readme_table_lists_every_planned_run_and_never_fills_one_in(report, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n<!-- results: begin (written by `cifarlab report STUDY_DIR --readme "
                      "README.md`) -->\nold table\n<!-- results: end -->\nafter\n")
    p = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(report["dir"]), "--readme", str(readme),
                        "--expect", "vgg3:3,combined"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n") and text.endswith("<!-- results: end -->\nafter\n")
    assert "old table" not in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    by = {}
    for cells in rows:
        by.setdefault(cells[0].lstrip("| "), []).append(cells)
    vgg3 = json.loads((report["dir"] / "report.json").read_text())["rows"][0]
    assert by["vgg3"][0][2] == f"{vgg3['mean']:.2f} ± {vgg3['std']:.2f}†" and by["vgg3"][0][3] == "2"
    assert by["vgg3"][1][2] == "not finished: seed 2"  # asked for, never run: listed, not filled in
    assert by["combined"][0][1:4] == ["400", "not finished: seed 0", ""] and by["combined"][0][4] == "87.82"
    assert [c[0].lstrip("| ") for c in rows] == ["vgg3", "vgg3", "dropout", "combined", "bn_only"]  # the study's order
    assert by["dropout"][0][9] == "fp32"
    bad = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(report["dir"]), "--readme",
                          str(tmp_path / "none.md")], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "no such file" in bad.stderr
    (tmp_path / "plain.md").write_text("# no block\n")
    bad = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(report["dir"]), "--readme",
                          str(tmp_path / "plain.md")], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "results block" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(report["dir"]), "--expect", "vgg3:x"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "PRESET:SEEDS" in bad.stderr


@pytest.mark.slow
def test_records_are_copied_without_checkpoints(report, tmp_path):
    dest = tmp_path / "results" / "small"
    (dest / "report_files").mkdir(parents=True)
    stale = dest / "report_files" / "best-confusion-of-an-earlier-report.png"
    stale.write_bytes(b"old")
    (report["dir"] / "report_files" / stale.name).write_bytes(b"old")  # in the study's own folder too
    p = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(report["dir"]), "--records", str(dest)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    src = report["dir"]
    assert not list(dest.rglob("*.pt")) and list(src.rglob("checkpoint.pt"))
    for run in src.glob("runs/*/seed*"):
        for name in ("config.yaml", "metrics.csv", "summary.json", "curves.png"):
            copy = dest / run.relative_to(src) / name
            assert copy.read_bytes() == (run / name).read_bytes(), copy
    for name in ("study.json", "report.md", "report.html", "report.json"):
        assert (dest / name).read_bytes() == (src / name).read_bytes()
    for link in re.findall(r"\]\((report_files/[^)]+)\)", (dest / "report.md").read_text()):
        assert (dest / link).is_file(), link  # the Markdown report's figures travel with it
    assert not stale.exists()  # and only they: no figure of an earlier report is left beside them
    assert not (src / "report_files" / stale.name).exists()
    assert sorted(f.name for f in (dest / "report_files").iterdir()) == \
        sorted(f.name for f in (src / "report_files").iterdir())
    bad = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(src), "--records", str(src)],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "study folder itself" in bad.stderr


def _forget_the_matrix(*run_dirs: Path) -> None:
    """Make runs look trained before summary.json kept the test set's confusion matrix."""
    for run in run_dirs:
        f = run / "summary.json"
        s = json.loads(f.read_text())
        del s["test_confusion"]
        f.write_text(json.dumps(s))


def _report_without_a_test_set(study: Path, tmp_path: Path) -> Path:
    """`cifarlab report STUDY` given a corrupt data archive (which it names); returns the archive."""
    bad = tmp_path / "cifar-10-binary.tar.gz"
    bad.write_bytes(b"not the archive")
    p = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(study), "--data", str(bad)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return bad


@pytest.mark.slow
def test_a_best_run_that_cannot_be_analysed_leaves_the_rest_and_says_why(report, tmp_path):
    study = tmp_path / "s"
    shutil.copytree(report["dir"], study)
    _forget_the_matrix(*study.glob("runs/*/seed*"))  # runs trained before summaries kept it
    bad = _report_without_a_test_set(study, tmp_path)
    rep = json.loads((study / "report.json").read_text())
    assert rep["best"] is None and "archive corrupt" in rep["best_error"] and str(bad) in rep["best_error"]
    assert [r["experiment"] for r in rep["rows"]] == [r["experiment"] for r in report["json"]["rows"]]
    assert not (study / "report_files" / "best-confusion.png").exists()  # not the figure of the earlier report
    md = (study / "report.md").read_text()
    assert "## Best run" not in md and f"Best run not analysed:\n\n```text\n{rep['best_error']}\n```" in md
    # a message of several lines (a data set not found lists where it looked) stays one block
    from cifarlab.reporting.report import render_html, render_md
    rep["best_error"] = "runs/vgg3/seed0: CIFAR-10 not found. Looked in:\n  - /nowhere\nSupply it by hand"
    md = render_md(rep)
    assert "```text\nruns/vgg3/seed0: CIFAR-10 not found. Looked in:\n  - /nowhere\nSupply it by hand\n```" in md
    assert "<pre>runs/vgg3/seed0: CIFAR-10 not found. Looked in:\n  - /nowhere\nSupply it by hand</pre>" in \
        render_html(rep, study)


@pytest.mark.slow
def test_better_runs_that_cannot_be_analysed_are_passed_over_and_named(report, tmp_path):
    """Records copied without checkpoints (as the repo keeps them) from before summaries kept the
    matrix: the best run that can still be analysed is, and the report names those passed over."""
    study = tmp_path / "s"
    shutil.copytree(report["dir"], study)
    rows = [r["experiment"] for r in report["json"]["rows"]]
    runs = [f"{p}/seed{s['seed']}" for p in rows for s in summaries(study, p)]  # the report's own order
    acc = {r: json.loads((study / "runs" / r / "summary.json").read_text())["test_acc"] for r in runs}
    first, second, third = sorted(runs, key=lambda r: -acc[r])[:3]
    _forget_the_matrix(study / "runs" / first, study / "runs" / second)  # trained before summary.json kept it
    (study / "runs" / first / "checkpoint.pt").unlink()  # and the best kept no checkpoint either

    # no test set: the second can't be measured from its checkpoint; the third kept its matrix
    _report_without_a_test_set(study, tmp_path)
    rep = json.loads((study / "report.json").read_text())
    b = rep["best"]
    assert (b["name"], b["source"], b["rank"], b["runs"]) == (third, "summary.json", 3, len(runs))
    assert [x["name"] for x in b["passed_over"]] == [first, second]
    assert "no checkpoint at" in b["passed_over"][0]["error"] and "archive corrupt" in b["passed_over"][1]["error"]
    md, html = (study / "report.md").read_text(), (study / "report.html").read_text()
    title = f"Best run analysed: {third} ({100 * acc[third]:.2f}%†), number 3 of {len(runs)} runs by test accuracy"
    assert f"## {title}" in md and f"<h2>{title}</h2>" in html
    said = f"{first} ({100 * acc[first]:.2f}%: no checkpoint at"
    assert said in md and said in html and f"{second} ({100 * acc[second]:.2f}%: " in md
    assert "Best run not analysed" not in md  # the reasons are in the line above, not repeated
    assert (study / "report_files" / "best-confusion.png").is_file()

    # with the test set the second is measured from its checkpoint; only the first is passed over
    from cifarlab.reporting.report import collect
    b = collect(study)["best"]
    assert (b["name"], b["source"], b["rank"]) == (second, "checkpoint.pt", 2)
    assert [x["name"] for x in b["passed_over"]] == [first]
    assert np.trace(b["matrix"]) / 10_000 == pytest.approx(acc[second], abs=3e-4)


RECORDS = Path(__file__).resolve().parents[1] / "results" / "protocol"


def _study_from_records(tmp_path, *runs: str) -> Path:
    """A study folder made of the repo's own records of full-length runs ("vgg3/seed0", ...)."""
    study = tmp_path / "s"
    for run in runs:
        shutil.copytree(RECORDS / "runs" / run, study / "runs" / run)
    shutil.copy(RECORDS / "study.json", study / "study.json")
    return study


def _empty_readme(tmp_path) -> Path:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results: begin (written by `cifarlab report STUDY_DIR --readme README.md`) -->\n"
                      "<!-- results: end -->\n")
    return readme


def test_a_run_computed_in_two_arithmetics_is_no_protocol_row_unless_its_folder_admits_it(tmp_path):
    """A run begun in bf16 and finished in fp32 (as older versions continued it on a machine without
    bf16) measures neither arithmetic: it stays out of the table, said as such in the report and the
    README, until a note in its folder admits it; then its row says the mix."""
    from cifarlab.reporting.report import MIXED_LINE, MIXED_NOTE, collect, readme_table, render_md
    study = _study_from_records(tmp_path, "vgg3/seed0", "vgg3/seed1", "vgg3/seed2")
    run = study / "runs" / "vgg3" / "seed2"
    s = json.loads((run / "summary.json").read_text())
    half = s["epochs"] // 2
    s["segments"] = [dict(s["segments"][0], arithmetic="bf16"),
                     dict(s["segments"][0], from_epoch=half, arithmetic="fp32")]
    s["arithmetic"] = f"bf16 (epochs 1-{half}), fp32 (epochs {half + 1}-{s['epochs']})"
    (run / "summary.json").write_text(json.dumps(s))
    rep = collect(study, figures=False)
    assert rep["mixed"] == [f"runs/vgg3/seed2 ({s['arithmetic']})"] and rep["rows"][0].n == 2
    assert not [u for u in rep["unfinished"] if "/vgg3/" in u]
    assert f"{MIXED_LINE}: runs/vgg3/seed2" in render_md(rep)
    rows = [line.split(" | ") for line in readme_table(rep, "vgg3:3").splitlines()[2:]]
    assert [r[2] for r in rows if r[0] == "| vgg3"][1] == "computed in two arithmetics: seed 2"
    (run / MIXED_NOTE).write_text("kept: the fp32 epochs are the last 50, after the bf16 ones converged\n")
    rep = collect(study, figures=False)
    assert not rep["mixed"] and rep["rows"][0].n == 3 and "fp32 (epochs" in rep["rows"][0].arithmetic


def test_a_finished_run_trained_without_the_test_set_is_not_called_unfinished(tmp_path):
    """test=false: the run finished but has no test accuracy. It stays out of the table, said as
    such in the report and the README, and never listed as unfinished."""
    from cifarlab.reporting.report import UNTESTED_LINE, collect, readme_table, render_md
    study = _study_from_records(tmp_path, "vgg3/seed0", "vgg3/seed1", "vgg3/seed2")
    path = study / "runs" / "vgg3" / "seed2" / "summary.json"
    s = json.loads(path.read_text())
    s.update(test_acc=None, test_loss=None)
    s.pop("test_confusion", None)
    path.write_text(json.dumps(s))
    rep = collect(study, figures=False)
    # the other presets the records' study.json plans have no folder here: listed as not finished; vgg3 is not
    assert rep["untested"] == ["runs/vgg3/seed2"] and not [u for u in rep["unfinished"] if "/vgg3/" in u]
    assert rep["rows"][0].n == 2
    said = next((x for x in render_md(rep).splitlines() if x.startswith("Not finished")), "")
    assert f"{UNTESTED_LINE}: runs/vgg3/seed2" in render_md(rep) and "vgg3" not in said
    rows = [line.split(" | ") for line in readme_table(rep, "vgg3:3").splitlines()[2:]]
    assert [r[2] for r in rows if r[0] == "| vgg3"][1] == "trained without the test set: seed 2"
    # beside a seed that has not finished, each is said as what it is
    (study / "runs" / "vgg3" / "seed1" / "summary.json").unlink()
    rows = [line.split(" | ") for line in readme_table(collect(study, figures=False), "vgg3:3").splitlines()[2:]]
    said = [r[2] for r in rows if r[0] == "| vgg3"][1]
    assert said.startswith("not finished: seed 1") and said.endswith("; trained without the test set: seed 2")


@pytest.mark.slow
def test_a_row_beyond_noise_is_flagged_against_each_published_figure(tmp_path):
    """The repo's own records of full-length runs (real summaries and curves), with two accuracies moved:
    dropout 3 points down, and a second vgg3 seed 0.2 points from the first (a small spread: the limit
    becomes twice the standard deviation)."""
    study = _study_from_records(tmp_path, "vgg1/seed0", "vgg3/seed0", "dropout/seed0")

    def move(run, to=None, **change):
        src = study / "runs" / run
        dst = src if to is None else src.parent / to
        if to is not None:
            shutil.copytree(src, dst)
        s = json.loads((src / "summary.json").read_text())
        s.update(change)
        (dst / "summary.json").write_text(json.dumps(s))
        return s

    vgg1 = json.loads((study / "runs/vgg1/seed0/summary.json").read_text())
    vgg3 = json.loads((study / "runs/vgg3/seed0/summary.json").read_text())
    move("vgg3/seed0", to="seed1", seed=1, test_acc=vgg3["test_acc"] + 0.002)
    drop = move("dropout/seed0", test_acc=json.loads((study / "runs/dropout/seed0/summary.json").read_text())
                ["test_acc"] - 0.03)
    # a run stopped after 7 of its 100 epochs: listed with how far it got, never in the table
    partial = study / "runs/vgg1/seed1"
    shutil.copytree(study / "runs/vgg1/seed0", partial)
    (partial / "summary.json").unlink()
    (partial / "metrics.csv").write_text("\n".join((partial / "metrics.csv").read_text().splitlines()[:8]) + "\n")
    readme = _empty_readme(tmp_path)
    p = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(study), "--readme", str(readme)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads((study / "report.json").read_text())
    checks = {(c["experiment"], c["source"]): c for c in rep["fidelity"]}
    assert set(checks) == {("vgg1", "article"), ("vgg3", "seed report"), ("vgg3", "article"),
                           ("dropout", "seed report"), ("dropout", "article")}  # vgg1 has no seed-report figure
    for c in checks.values():
        row = next(r for r in rep["rows"] if r["experiment"] == c["experiment"])
        published = row["seed_report"] if c["source"] == "seed report" else row["article"]
        assert c["diff"] == pytest.approx(row["mean"] - published)
        assert c["limit"] == (1.5 if row["n"] == 1 else min(1.5, 2 * row["std"]))
        assert c["beyond"] == (abs(c["diff"]) > c["limit"])
    vgg3_accs = [100 * vgg3["test_acc"], 100 * vgg3["test_acc"] + 0.2]
    assert checks["vgg3", "article"]["limit"] == pytest.approx(2 * np.std(vgg3_accs, ddof=1))  # 0.28 points
    assert checks["dropout", "seed report"]["diff"] == pytest.approx(100 * drop["test_acc"] - 82.12)
    assert checks["dropout", "seed report"]["beyond"] and checks["dropout", "article"]["beyond"]
    assert checks["vgg1", "article"]["beyond"] == (abs(100 * vgg1["test_acc"] - 67.07) > 1.5)
    md, html = (study / "report.md").read_text(), (study / "report.html").read_text()
    beyond = [c for c in checks.values() if c["beyond"]]
    assert f"{len(beyond)} of 5 checks are beyond the limit" in md and "investigate" in html
    assert f"| dropout | seed report | 82.12 | {100 * drop['test_acc']:.2f} | 1 |" in md
    table = readme.read_text()
    d = checks["dropout", "seed report"]["diff"]
    assert f"| **{d:+.2f}** |" in table and "beyond noise" in table
    assert f"| {checks['vgg1', 'article']['diff']:+.2f} |" in table  # within: not marked
    assert "| vgg1 | 100 | not finished: seed 1 (at epoch 7) |" in table
    # the report's own results table sets the same differences in bold, and says why
    assert f"| 82.12 | **{d:+.2f}** | 83.45 | **{checks['dropout', 'article']['diff']:+.2f}** |" in md
    assert f"| {checks['vgg1', 'article']['diff']:+.2f} |" in md and "A difference in bold is beyond noise" in md
    assert f'<td class="beyond"><b>{d:+.2f}</b></td>' in html and "A difference in bold" in html
    assert "Not finished (not in the table): runs/vgg1/seed1 (at epoch 7 of 100)" in md
    assert rep["rows"][0]["n"] == 1  # the partial seed is not averaged in
    # the median epoch (what a run costs, whatever paused it): vgg1's from its own metrics.csv
    with open(study / "runs/vgg1/seed0/metrics.csv") as f:
        vgg1_epochs = [float(r["epoch_seconds"]) for r in csv.DictReader(f)]
    assert rep["rows"][0]["median_epoch_seconds"] == pytest.approx(np.median(vgg1_epochs))
    assert f"| {np.median(vgg1_epochs):.0f} s | fp32 | yes |" in md


@pytest.mark.slow
def test_a_row_whose_seeds_ran_on_different_devices_names_each(tmp_path):
    """The repo's vgg3 records: seed 0 trained on one CPU, seed 1 on another. The row's
    device names both, each with its seed, in report.json and in the README table."""
    study = _study_from_records(tmp_path, "vgg3/seed0", "vgg3/seed1")
    devices = [json.loads((study / "runs" / "vgg3" / f"seed{k}" / "summary.json").read_text())["device"]
               for k in (0, 1)]
    assert devices[0] != devices[1], "the records no longer hold two devices; this test needs them"
    readme = _empty_readme(tmp_path)
    p = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(study), "--readme", str(readme)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    row = next(r for r in json.loads((study / "report.json").read_text())["rows"] if r["experiment"] == "vgg3")
    assert row["device"] == f"{devices[0]} (seed 0); {devices[1]} (seed 1)"
    line = next(x for x in readme.read_text().splitlines() if x.startswith("| vgg3 |"))
    assert "model 85" in line and "(seed 0)" in line and "model 207" in line and "(seed 1)" in line, line


def test_the_fidelity_table_says_how_much_a_last_epoch_figure_moves(tmp_path):
    """On the repo's records: weight_decay's test accuracy keeps moving by about a point from
    epoch to epoch, the baseline's settles; the column is their spread over the second half."""
    from cifarlab.runfolder import read_metrics
    from cifarlab.reporting.report import collect, fidelity_table, late_epoch_sd, load_run
    study = _study_from_records(tmp_path, "vgg3/seed0", "vgg3/seed1", "weight_decay/seed0")
    rep = collect(study, figures=False)

    def spread(run):
        late = [100 * r["val_acc"] for r in read_metrics(study / "runs" / run)[50:]]  # epochs 51-100
        return np.std(late, ddof=1)

    rows = {r.experiment: r for r in rep["rows"]}
    assert rows["weight_decay"].late_epoch_sd == pytest.approx(spread("weight_decay/seed0"))
    assert rows["vgg3"].late_epoch_sd == pytest.approx((spread("vgg3/seed0") + spread("vgg3/seed1")) / 2)
    assert rows["weight_decay"].late_epoch_sd > 0.5 > 0.2 > rows["vgg3"].late_epoch_sd
    head, body = fidelity_table(rep)
    col = head.index("epoch to epoch")
    assert {r[0]: r[col] for r in body}["weight_decay"] == f"sd {spread('weight_decay/seed0'):.2f}"
    # a run whose per-epoch curve is a held-out split says nothing of the test set's figure
    run = load_run(study / "runs" / "weight_decay" / "seed0")
    run["summary"]["val_is_test"] = False
    assert late_epoch_sd(run) is None


@pytest.mark.slow
def test_findings_explain_a_row_beyond_noise_in_the_report_and_travel_with_the_records(tmp_path):
    """The repo's weight_decay and vgg3 records (both beyond the limit) with a findings.yaml
    on weight_decay: its checks read "finding below" and the text is in report.md
    and report.html; vgg3's still read "investigate"; the file goes into the records. An
    unknown experiment in the file is one line that lists the valid names."""
    study = _study_from_records(tmp_path, "vgg3/seed0", "vgg3/seed1", "weight_decay/seed0")
    (study / "findings.yaml").write_text(
        "weight_decay: |\n  The step is Keras's: see `benchmarks/keras_parity.py` and\n"
        "  [the tables](results/keras_parity/README.md).\n\n  A second paragraph <with markup>.\n")
    out = tmp_path / "records"
    p = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(study), "--records", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads((study / "report.json").read_text())
    assert {c["experiment"] for c in rep["fidelity"] if c["beyond"]} == {"vgg3", "weight_decay"}
    from cifarlab.reporting.report import fidelity_table
    verdicts = {(row[0], row[1]): row[-1] for row in fidelity_table(rep)[1]}
    assert verdicts["weight_decay", "seed report"] == verdicts["weight_decay", "article"] == \
        "BEYOND NOISE: finding below"
    assert verdicts["vgg3", "seed report"] == verdicts["vgg3", "article"] == "BEYOND NOISE: investigate"
    md = (study / "report.md").read_text()
    assert "2 of them with a finding below, 2 without one yet" in md
    assert "### What the investigation found\n\n**weight_decay.** The step is Keras's: see " \
           "`benchmarks/keras_parity.py`" in md
    page = (study / "report.html").read_text()
    assert ("<p><b>weight_decay.</b> The step is Keras&#x27;s: see <code>benchmarks/keras_parity.py</code> and\n"
            '<a href="results/keras_parity/README.md">the tables</a>.</p><p>A second paragraph '
            "&lt;with markup&gt;.</p>") in page
    assert (out / "findings.yaml").read_text() == (study / "findings.yaml").read_text()

    (study / "findings.yaml").write_text("weight_decy: |\n  a typo\n")
    p = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(study)], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"{study / 'findings.yaml'}: unknown experiment(s) weight_decy; valid: " in p.stderr
    assert "weight_decay" in p.stderr and "Traceback" not in p.stderr


# --- several study folders in one report ----------------------------------------------

def _has_bf16() -> bool:
    import torch
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# The second study's own training setting: bf16 where the CPU has it, else another learning rate.
OTHER = "amp=bf16" if _has_bf16() else "lr=0.01"
TWO_ARGS = ["--only", "vgg1:2,vgg2:2", "--workers", "1", "subset=1000", "val_split=200", "epochs=1",
            "eval_batch_size=500"]


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory):
    """Two tiny real studies of vgg1 and vgg2 (two seeds each, one epoch on 800 images): "plain" with
    the study's overrides only, "other" with OTHER as well (an fp32 and a bf16 folder, say)."""
    root = tmp_path_factory.mktemp("two")
    for name, extra in (("plain", []), ("other", [OTHER])):
        p = subprocess.run([sys.executable, "-m", "cifarlab", "study", "--out", str(root / name), *TWO_ARGS, *extra],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
    return {"plain": root / "plain", "other": root / "other"}


def _report_of(*dirs, out, extra=()):
    return subprocess.run([sys.executable, "-m", "cifarlab", "report", *map(str, dirs), "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=600)


def test_label_groups_keeps_the_plain_name_and_names_what_others_change():
    from cifarlab.reporting.compare import label_groups
    plain = {"name": "vgg3", "settings": {"amp": "auto", "lr": 0.001}}
    bf16 = {"name": "vgg3", "settings": {"amp": "native", "lr": 0.001}}
    fast = {"name": "vgg3", "settings": {"amp": "auto", "lr": 0.01}}
    label_groups([bf16, plain, fast], plain)
    assert [g["label"] for g in (plain, bf16, fast)] == ["vgg3", "vgg3 amp=native", "vgg3 lr=0.01"]
    assert (plain["variant"], bf16["variant"]) == ([], ["amp=native"])
    label_groups([plain, bf16, fast])  # as compare labels: every group by what sets it apart
    assert [g["label"] for g in (plain, bf16, fast)] == ["vgg3 amp=auto lr=0.001", "vgg3 amp=native lr=0.001",
                                                          "vgg3 amp=auto lr=0.01"]


@pytest.mark.slow
def test_several_study_folders_make_rows_by_settings_tested_against_the_plain_row(two_studies, tmp_path):
    from scipy import stats
    plain, other = two_studies["plain"], two_studies["other"]
    (other / "findings.yaml").write_text("vgg1: |\n  What the other folder found.\n")
    try:
        out = tmp_path / "both"
        p = _report_of(plain, other, out=out)
    finally:
        (other / "findings.yaml").unlink()
    assert p.returncode == 0, p.stdout + p.stderr
    assert "from 2 study folders" in p.stdout and not (plain / "report.md").exists()
    rep = json.loads((out / "report.json").read_text())
    rows = {r["experiment"]: r for r in rep["rows"]}
    assert list(rows) == ["vgg1", f"vgg1 {OTHER}", "vgg2", f"vgg2 {OTHER}"]  # the plain row first
    for preset in ("vgg1", "vgg2"):
        for label, study in ((preset, plain), (f"{preset} {OTHER}", other)):
            assert rows[label]["test_acc"] == [100 * s["test_acc"] for s in summaries(study, preset)]
            assert rows[label]["preset"] == preset and rows[label]["runs"] == [
                str(study / "runs" / preset / f"seed{k}") for k in (0, 1)]
    if OTHER == "amp=bf16":
        assert rows["vgg1"]["arithmetic"] == "fp32" and rows["vgg1 amp=bf16"]["arithmetic"] == "bf16"
    comps = {(c["a"], c["b"]): c for c in rep["comparisons"]}
    # the study's claim, between rows of the same settings; then each labelled row against its plain row
    assert ("vgg2", "vgg1") in comps and (f"vgg2 {OTHER}", f"vgg1 {OTHER}") in comps
    assert ("vgg2", f"vgg1 {OTHER}") not in comps and (f"vgg2 {OTHER}", "vgg1") not in comps
    for preset in ("vgg1", "vgg2"):
        c = comps[f"{preset} {OTHER}", preset]
        t, pv = stats.ttest_ind(rows[f"{preset} {OTHER}"]["test_acc"], rows[preset]["test_acc"], equal_var=False)
        w = c["welch"]
        assert w["p"] == pytest.approx(pv) and w["ci"][0] <= w["diff"] <= w["ci"][1]
        assert OTHER in c["claim"] and "(vs " in c["claim"]
    assert rep["findings"] == {f"vgg1 {OTHER}": "What the other folder found."}  # its own folder's row
    md = (out / "report.md").read_text()
    assert f"| vgg2 {OTHER} | vgg1 {OTHER} |" in md and str(plain) in md and str(other) in md
    assert "group-vgg1-by-settings" in rep["figures"] and (out / "report_files" / rep["figures"]["curves-vgg1 " + OTHER]
                                                          ).is_file()


@pytest.mark.slow
def test_a_run_finished_in_two_folders_is_refused_naming_both(two_studies, tmp_path):
    third = tmp_path / "third"
    shutil.copytree(two_studies["plain"] / "runs" / "vgg1" / "seed0", third / "runs" / "vgg1" / "seed0")
    p = _report_of(two_studies["plain"], third, out=tmp_path / "out")
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert str(two_studies["plain"] / "runs" / "vgg1" / "seed0") in p.stderr
    assert str(third / "runs" / "vgg1" / "seed0") in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_several_folders_need_out_and_keep_their_records_apart(two_studies, tmp_path):
    dirs = [str(two_studies["plain"]), str(two_studies["other"])]
    p = subprocess.run([sys.executable, "-m", "cifarlab", "report", *dirs], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 2 and "2 study folders make one report" in p.stderr and "--out DIR" in p.stderr
    p = _report_of(*dirs, out=tmp_path / "out", extra=["--records", str(tmp_path / "records")])
    assert p.returncode == 2 and "for each folder on its own" in p.stderr
    p = _report_of(*dirs, out=dirs[1])
    assert p.returncode == 2 and "one of the study folders" in p.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "records").exists()
    assert not any((Path(d) / "report.md").exists() for d in dirs)


@pytest.mark.slow
def test_unfinished_runs_are_named_with_their_folder(two_studies, tmp_path):
    plain, other = tmp_path / "plain", tmp_path / "other"
    shutil.copytree(two_studies["plain"], plain)
    shutil.copytree(two_studies["other"], other)
    (other / "runs" / "vgg2" / "seed1" / "summary.json").unlink()  # stopped after its epoch
    (other / "runs" / "vgg3" / "seed0").mkdir(parents=True)  # begun, no epoch yet
    readme = _empty_readme(tmp_path)
    p = _report_of(plain, other, out=tmp_path / "out", extra=["--readme", str(readme), "--expect", "vgg1:3"])
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    unfinished = [str(other / "runs" / "vgg2" / "seed1") + " (at epoch 1 of 1)", str(other / "runs" / "vgg3" / "seed0")]
    assert rep["unfinished"] == unfinished
    assert f"Not finished (not in the table): {', '.join(unfinished)}" in (tmp_path / "out" / "report.md").read_text()
    lines = [x for x in readme.read_text().splitlines() if x.startswith("| vgg")]
    assert [x.split(" | ")[0][2:] for x in lines] == ["vgg1", "vgg1", f"vgg1 {OTHER}", "vgg2", f"vgg2 {OTHER}",
                                                      f"vgg2 {OTHER}", f"vgg3 {OTHER}"]
    assert lines[1].startswith(f"| vgg1 | 100 | not finished: seed 2 in {plain} |")  # --expect: the first folder's
    assert lines[5].startswith(f"| vgg2 {OTHER} | 100 | not finished: seed 1 (at epoch 1) in {other} |")
    assert lines[6].startswith(f"| vgg3 {OTHER} | 100 | not finished: seed 0 in {other} |  | 73.81 |")


@pytest.mark.slow
def test_readme_table_from_two_folders(two_studies, tmp_path):
    readme = _empty_readme(tmp_path)
    p = _report_of(two_studies["plain"], two_studies["other"], out=tmp_path / "out", extra=["--readme", str(readme)])
    assert p.returncode == 0, p.stdout + p.stderr
    from cifarlab.reporting.report import _short_device
    rows = {r["experiment"]: r for r in json.loads((tmp_path / "out" / "report.json").read_text())["rows"]}
    table = [x.split(" | ") for x in readme.read_text().splitlines() if x.startswith("| vgg")]
    assert [c[0][2:] for c in table] == list(rows) == ["vgg1", f"vgg1 {OTHER}", "vgg2", f"vgg2 {OTHER}"]
    for cells in table:
        r = rows[cells[0][2:]]
        assert cells[1:4] == ["1", f"{r['mean']:.2f} ± {r['std']:.2f}†", "2"]
        assert cells[9] == r["arithmetic"] and cells[10] == _short_device(r["device"]) + " |"


def test_the_report_gives_the_paired_test_by_seed_beside_welchs():
    """The report of the repo's two protocol folders (the records as they are): vgg3 in bf16 against vgg3
    in fp32, one network and seeds 0-2, is tested by seed as well as by Welch's test, and its verdict is
    the paired test's."""
    from scipy import stats
    from cifarlab.reporting.report import collect, render_html, render_md
    bf16_dir = RECORDS.parent / "protocol-bf16"
    rep = collect([RECORDS, bf16_dir], figures=False, out_dir=RECORDS.parent / "study")
    c = next(x for x in rep["comparisons"] if (x.a, x.b) == ("vgg3 amp=native", "vgg3"))
    a = [100 * s["test_acc"] for s in summaries(bf16_dir, "vgg3")[:3]]
    b = [100 * s["test_acc"] for s in summaries(RECORDS, "vgg3")[:3]]
    d = np.subtract(a, b)
    se = d.std(ddof=1) / np.sqrt(3)
    lo, hi = d.mean() - stats.t.ppf(0.975, 2) * se, d.mean() + stats.t.ppf(0.975, 2) * se
    assert c.test == "paired" and c.paired["seeds"] == [0, 1, 2] and c.paired["diffs"] == pytest.approx(d)
    assert c.ci == pytest.approx([lo, hi]) and c.t == pytest.approx(d.mean() / se) and c.df == 2
    w = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert c.welch["ci"] == pytest.approx([w.low, w.high]) and c.distinguishable == (c.p < 0.05)
    md, html = render_md(rep), render_html(rep, RECORDS.parent / "study")
    row = next(x for x in md.splitlines() if x.startswith("| vgg3 amp=native | vgg3 | vgg3 amp=native against"))
    assert f"| [{w.low:+.2f}, {w.high:+.2f}] |" in row and f"| [{lo:+.2f}, {hi:+.2f}] |" in row
    assert row.endswith(" | paired by seed (3 pairs) | distinguishable |")
    by_seed = ", ".join(f"{x:+.2f}" for x in d)
    assert f"| vgg3 amp=native | vgg3 | 0, 1, 2 | {by_seed} | {d.mean():+.2f} | [{lo:+.2f}, {hi:+.2f}] |" in md
    assert "paired by seed (3 pairs)" in html and f"[{lo:+.2f}, {hi:+.2f}]" in html and "paired t-test" in html


@pytest.mark.slow
def test_a_report_of_records_lists_the_runs_their_plans_leave_unfinished(two_studies, tmp_path):
    """Records keep finished runs only: a run still going elsewhere has no folder in them, yet its
    folder's study.json plans it. The report of several such folders lists it as not finished, with its
    folder, as the README table does; so does the report of one."""
    plain, other = tmp_path / "plain", tmp_path / "other"
    shutil.copytree(two_studies["plain"], plain)
    shutil.copytree(two_studies["other"], other)
    shutil.rmtree(other / "runs" / "vgg2" / "seed1")  # planned (vgg2:2), its records not here
    readme = _empty_readme(tmp_path)
    p = _report_of(plain, other, out=tmp_path / "out", extra=["--readme", str(readme)])
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["unfinished"] == [str(other / "runs" / "vgg2" / "seed1")]
    said = f"Not finished (not in the table): {other / 'runs' / 'vgg2' / 'seed1'}"
    for page in ("report.md", "report.html"):
        assert said in (tmp_path / "out" / page).read_text()
    assert "1 unfinished" in p.stdout
    assert f"| vgg2 {OTHER} | 100 | not finished: seed 1 in {other} |" in readme.read_text()
    p = subprocess.run([sys.executable, "-m", "cifarlab", "report", str(other)], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Not finished (not in the table): runs/vgg2/seed1\n" in (other / "report.md").read_text()


def test_the_mean_curves_of_an_l2_row_carry_the_penalised_validation_loss(tmp_path):
    """weight_decay's record predates val_loss_l2: its mean history has no such column and l2_of gives
    its penalty, so the curves say the penalty is not recorded. Two seeds whose records hold the column
    (written as a run of this version writes it) average it epoch by epoch; one seed without it drops it."""
    from cifarlab.runfolder import read_metrics
    from cifarlab.reporting.report import l2_of, load_run, mean_history
    study = _study_from_records(tmp_path, "weight_decay/seed0")
    run = load_run(study / "runs" / "weight_decay" / "seed0")
    assert l2_of([run]) == run["config"]["l2"] > 0
    assert "val_loss_l2" not in mean_history([run])[0]
    hist = read_metrics(study / "runs" / "weight_decay" / "seed0")
    a = {**run, "history": [{**h, "val_loss_l2": h["val_loss"] + 1.0} for h in hist]}
    b = {**run, "history": [{**h, "val_loss_l2": h["val_loss"] + 2.0} for h in hist]}
    mean = mean_history([a, b])
    assert [m["val_loss_l2"] for m in mean] == pytest.approx([h["val_loss"] + 1.5 for h in hist])
    assert "val_loss_l2" not in mean_history([a, run])[0]
