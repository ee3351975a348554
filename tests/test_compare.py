"""Comparing run folders outside any study: groups by settings, the report's numbers, a browser."""
import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_report import CHROMIUM, _chromium

pytestmark = pytest.mark.slow  # every test here starts other processes


@pytest.fixture(scope="module")
def comparison(small_study, tmp_path_factory):
    """The small study's runs copied out under names of a user's own, one more run with another
    learning rate, and a run folder that never finished."""
    from conftest import STUDY_ARGS
    from cifarlab.config import resolve_config
    from cifarlab.train import train
    mine = tmp_path_factory.mktemp("mine")
    dirs = []
    for preset in ("vgg3", "dropout"):
        for seed in (0, 1):
            d = mine / f"{preset}-try{seed}"
            shutil.copytree(small_study["dir"] / "runs" / preset / f"seed{seed}", d)
            dirs.append(d)
    overrides = STUDY_ARGS[STUDY_ARGS.index("--workers") + 2:]
    cfg = resolve_config("vgg3", None, [*overrides, "lr=0.01", "threads=1"])
    train(cfg, mine / "vgg3-fast", progress=False, log=lambda *a: None)
    dirs.append(mine / "vgg3-fast")
    for seed in (0, 1):
        d = mine / f"bn-{seed}"
        shutil.copytree(small_study["dir"] / "runs" / "bn_only" / f"seed{seed}", d)
        dirs.append(d)
    unfinished = mine / "bn-crashed"
    shutil.copytree(small_study["dir"] / "runs" / "bn_only" / "seed0", unfinished)
    (unfinished / "summary.json").unlink()
    dirs.append(unfinished)
    out = tmp_path_factory.mktemp("cmp") / "out"
    again = str(dirs[0].parent / ".." / dirs[0].parent.name / dirs[0].name)  # overlapping globs: one run twice
    p = subprocess.run([sys.executable, "-m", "cifarlab", "compare", *map(str, dirs), again, "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return {"dirs": dirs, "out": out, "stdout": p.stdout, "json": json.loads((out / "compare.json").read_text()),
            "html": (out / "compare.html").read_text(), "md": (out / "compare.md").read_text()}


def accs(dirs):
    return [100 * json.loads((d / "summary.json").read_text())["test_acc"] for d in dirs]


def test_runs_are_grouped_by_their_settings(comparison):
    rows = comparison["json"]["rows"]
    d = comparison["dirs"]
    assert [r["runs"] for r in rows] == [[str(x) for x in d[0:2]], [str(x) for x in d[2:4]], [str(d[4])],
                                         [str(x) for x in d[5:7]]]
    assert [r["n"] for r in rows] == [2, 2, 1, 2]
    # a group is named by its preset, and by what sets it apart where two groups share one
    assert [r["experiment"] for r in rows] == ["vgg3 lr=0.001", "dropout", "vgg3 lr=0.01", "bn_only"]
    assert rows[2]["description"] == "lr=0.01 (vs 0.001)" and rows[0]["description"] == "(the reference)"
    twice = f"{d[0].parent}/../{d[0].parent.name}/{d[0].name} (given twice; counted once)"
    assert comparison["json"]["skipped"] == [f"{d[7]} (not finished)", twice]
    for r, group in zip(rows, (d[0:2], d[2:4], d[4:5], d[5:7])):
        a = accs(group)
        assert r["test_acc"] == a and r["mean"] == pytest.approx(np.mean(a), abs=1e-9)
        cell = f"{r['mean']:.2f}" + (f" ± {np.std(a, ddof=1):.2f}" if len(a) > 1 else "") + "†"
        assert cell in comparison["html"] and cell in comparison["md"] and cell in comparison["stdout"]


def test_each_group_is_tested_against_the_first(comparison, small_study):
    from scipy import stats
    comps = comparison["json"]["comparisons"]
    rows = comparison["json"]["rows"]
    assert [(c["a"], c["b"]) for c in comps] == [(rows[1]["experiment"], rows[0]["experiment"]),
                                                 (rows[3]["experiment"], rows[0]["experiment"])]
    d = comparison["dirs"]
    t, p = stats.ttest_ind(accs(d[2:4]), accs(d[0:2]), equal_var=False)
    assert comps[0]["p"] == pytest.approx(p) and comps[0]["diff"] == pytest.approx(np.mean(accs(d[2:4]))
                                                                                   - np.mean(accs(d[0:2])))
    assert "dropout=0.2 (vs 0.0)" in comps[0]["claim"]
    # the same runs in the study report give the same test (dropout against vgg3)
    from cifarlab.reporting.report import collect
    study = next(c for c in collect(small_study["dir"], figures=False)["comparisons"]
                 if (c.a, c.b) == ("dropout", "vgg3"))
    assert study.p == pytest.approx(comps[0]["p"]) and study.ci == pytest.approx(comps[0]["ci"])
    assert f"{p:.3g}" in comparison["md"] and "Welch" in comparison["html"]


def test_a_margin_of_equivalence_calls_each_group_equivalent_or_not(comparison, tmp_path):
    """--within POINTS: a group is equivalent to the first when the 95% interval of its difference
    lies inside ±POINTS; the margin is set just outside and just inside the widest end of the
    dropout group's real interval, so the verdict turns on the interval alone."""
    d = comparison["dirs"]
    runs = [*d[0:2], *d[2:4]]
    lo, hi = next(c for c in comparison["json"]["comparisons"] if c["a"] == "dropout")["ci"]
    edge = max(abs(lo), abs(hi))
    for margin, equivalent in ((edge * 1.01, True), (edge * 0.99, False)):
        out = tmp_path / f"m{margin:.4f}"
        p = subprocess.run([sys.executable, "-m", "cifarlab", "compare", *map(str, runs), "--out", str(out),
                            "--within", f"{margin:.6f}"], capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        c = json.loads((out / "compare.json").read_text())["comparisons"][0]
        assert c["equivalent"] is equivalent and c["within"] == pytest.approx(margin)
        assert c["test"] == "welch"  # dropout is another network: no pairs by seed
        said = ("equivalent: the Welch interval lies inside" if equivalent
                else "not shown equivalent: the Welch interval reaches")
        assert said in p.stdout and said in (out / "compare.md").read_text(), p.stdout
        if not equivalent:
            assert f"reaches {lo if abs(lo) > abs(hi) else hi:+.2f}, beyond ±" in p.stdout
    p = subprocess.run([sys.executable, "-m", "cifarlab", "compare", *map(str, runs), "--out", str(tmp_path / "x"),
                        "--within", "0"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "--within 0: the margin must be a positive number" in p.stderr, p.stderr


def test_groups_from_different_devices_say_so(comparison, tmp_path):
    """Times measure the machine as much as the settings: where the groups ran on different
    devices, the Groups table names each one and a note says the times do not compare."""
    from cifarlab.reporting.compare import devices_note
    assert devices_note(comparison["json"]) is None and "ran on different devices" not in comparison["md"]
    d = comparison["dirs"]
    elsewhere = []
    for run in d[2:4]:  # the dropout runs, as if trained on another machine
        moved = tmp_path / run.name
        shutil.copytree(run, moved)
        s = json.loads((moved / "summary.json").read_text())
        s["device"] = "cuda (NVIDIA H200)"
        (moved / "summary.json").write_text(json.dumps(s))
        elsewhere.append(moved)
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "cifarlab", "compare", *map(str, d[0:2]), *map(str, elsewhere),
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    md = (out / "compare.md").read_text()
    here = json.loads((d[0] / "summary.json").read_text())["device"]
    assert "ran on different devices" in p.stdout and "ran on different devices" in md
    assert "ran on different devices" in (out / "compare.html").read_text()
    groups = md.split("## Groups", 1)[1].split("##", 1)[0]
    rows = [line for line in groups.splitlines() if line.startswith("| vgg3") or line.startswith("| dropout")]
    assert len(rows) == 2 and "NVIDIA H200" in rows[1] and "NVIDIA H200" not in rows[0]
    from cifarlab.reporting.report import _short_device
    assert _short_device(here) in rows[0]


def test_one_page_with_its_figures(comparison):
    html = comparison["html"]
    imgs = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    figs = comparison["json"]["figures"]
    assert set(figs) == {"overlay", "curves-1", "curves-2", "curves-3", "curves-4"}
    assert len(imgs) == len(figs) and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert "http://" not in html and "https://" not in html and "file:" not in html
    for name in figs.values():
        assert f"compare_files/{name}" in comparison["md"] and (comparison["out"] / "compare_files" / name).is_file()
    assert "seed report" not in html  # a user's settings have no published figure
    assert f"-> {comparison['out'] / 'compare.html'}" in comparison["stdout"]


@pytest.mark.skipif(not CHROMIUM, reason="chromium not installed (.ci/run installs it)")
def test_comparison_renders_in_a_headless_browser(comparison, tmp_path):
    from PIL import Image
    url = (comparison["out"] / "compare.html").resolve().as_uri()
    shot = tmp_path / "compare.png"
    p = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert shot.is_file(), p.stderr
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2000, 1280) and img.std() > 20 and (img < 128).mean() > 0.01
    dom = _chromium("--dump-dom", "--virtual-time-budget=5000", url).stdout
    assert dom.count("<table") == 3  # results, groups, statistics
    assert dom.count("<img ") == len(comparison["json"]["figures"]) and "Welch" in dom
    probe = tmp_path / "probe.html"
    probe.write_text(comparison["html"].replace(
        "</body>", "<script>document.body.setAttribute('data-loaded', [...document.images]"
                   ".filter(i => i.complete && i.naturalWidth > 0).length)</script></body>"))
    dom = _chromium("--dump-dom", "--virtual-time-budget=5000", probe.as_uri()).stdout
    assert f'data-loaded="{len(comparison["json"]["figures"])}"' in dom


RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_groups_of_one_network_that_share_seeds_are_paired_by_seed(tmp_path):
    """The bf16 verdict's runs as they are recorded: vgg3 in fp32 and in bf16 (amp=native), seeds 0-2, one
    network, so three pairs by seed. The paired test against a hand computation on their summaries, Welch's
    beside it, and the margin of equivalence judged by the paired interval, which the verdict names."""
    from scipy import stats
    fp32 = [RESULTS / "protocol" / "runs" / "vgg3" / f"seed{k}" for k in range(3)]
    bf16 = [RESULTS / "protocol-bf16" / "runs" / "vgg3" / f"seed{k}" for k in range(3)]
    out = tmp_path / "verdict"
    # ±0.5: the paired interval lies inside it, Welch's does not
    p = subprocess.run([sys.executable, "-m", "cifarlab", "compare", *map(str, fp32 + bf16), "--within", "0.5",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    c = json.loads((out / "compare.json").read_text())["comparisons"][0]
    d = np.array(accs(bf16)) - np.array(accs(fp32))  # by seed: bf16 minus fp32
    n, mean, se = len(d), d.mean(), d.std(ddof=1) / np.sqrt(len(d))
    half = stats.t.ppf(0.975, n - 1) * se
    t = mean / se
    pt = c["paired"]
    assert c["test"] == "paired" and c["pairing"] == "3 pairs by seed"
    assert pt["seeds"] == [0, 1, 2] and pt["n"] == 3 and pt["df"] == 2
    assert pt["diffs"] == pytest.approx(d.tolist()) and pt["diff"] == pytest.approx(mean)
    assert pt["ci"] == pytest.approx([mean - half, mean + half]) and pt["t"] == pytest.approx(t)
    assert pt["p"] == pytest.approx(2 * stats.t.sf(abs(t), n - 1))
    assert pt["diffs"] == pytest.approx([-0.27, -0.30, -0.21], abs=0.005)  # the records' three pairs
    assert pt["ci"] == pytest.approx([-0.37, -0.15], abs=0.01)
    w = stats.ttest_ind(accs(bf16), accs(fp32), equal_var=False)
    ci = w.confidence_interval(0.95)
    assert c["welch"]["ci"] == pytest.approx([ci.low, ci.high]) and c["welch"]["p"] == pytest.approx(w.pvalue)
    assert c["welch"]["ci"] == pytest.approx([-0.80, 0.28], abs=0.01)
    # the verdict's numbers are the paired test's
    assert (c["diff"], c["p"], c["ci"]) == (pt["diff"], pt["p"], pt["ci"]) and c["distinguishable"] is True
    assert c["equivalent"] is True and c["within"] == 0.5
    md, html = (out / "compare.md").read_text(), (out / "compare.html").read_text()
    for text in (md, html, p.stdout):
        assert "paired by seed (3 pairs)" in text and "equivalent: the paired interval lies inside ±0.5" in text
        assert f"[{mean - half:+.2f}, {mean + half:+.2f}]" in text and f"[{ci.low:+.2f}, {ci.high:+.2f}]" in text
    by_seed = ", ".join(f"{x:+.2f}" for x in d)
    assert f"| 0, 1, 2 | {by_seed} | {mean:+.2f} | [{mean - half:+.2f}, {mean + half:+.2f}] | {t:.2f} | 2 |" in md
    assert f"<td>{by_seed}</td>" in html.replace('<td class="text">', "<td>")
    # ±0.3: the paired interval reaches beyond it
    from cifarlab.reporting.compare import collect, stats_table
    rep = collect([*fp32, *bf16], tmp_path / "x", figures=False, within=0.3)
    assert rep["comparisons"][0].equivalent is False
    assert stats_table(rep)[1][0][-1] == f"not shown equivalent: the paired interval reaches {mean - half:+.2f}, " \
                                         "beyond ±0.3"


@pytest.fixture(scope="module")
def other_seeds(small_study, tmp_path_factory):
    """vgg3 at ten times the learning rate, seeds 2 and 3: real tiny runs that share no seed with the
    small study's vgg3 (seeds 0 and 1)."""
    from conftest import STUDY_ARGS
    from cifarlab.config import resolve_config
    from cifarlab.train import train
    root = tmp_path_factory.mktemp("other_seeds")
    overrides = STUDY_ARGS[STUDY_ARGS.index("--workers") + 2:]
    dirs = []
    for seed in (2, 3):
        cfg = resolve_config("vgg3", None, [*overrides, "lr=0.01", f"seed={seed}", "threads=1"])
        train(cfg, root / f"vgg3-fast-s{seed}", progress=False, log=lambda *a: None)
        dirs.append(root / f"vgg3-fast-s{seed}")
    return dirs


def test_groups_without_common_seeds_or_network_fall_back_to_welch_and_say_so(comparison, other_seeds, small_study,
                                                                                tmp_path):
    from scipy import stats
    plain = [small_study["dir"] / "runs" / "vgg3" / f"seed{k}" for k in (0, 1)]
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "cifarlab", "compare", *map(str, plain + other_seeds),
                        "--within", "50", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads((out / "compare.json").read_text())
    c = rep["comparisons"][0]
    assert [r["seeds"] for r in rep["rows"]] == [[0, 1], [2, 3]]
    assert c["test"] == "welch" and c["paired"] is None and c["pairing"] == "no seed in common"
    w = stats.ttest_ind(accs(other_seeds), accs(plain), equal_var=False)
    ci = w.confidence_interval(0.95)
    assert c["p"] == pytest.approx(w.pvalue) and c["ci"] == pytest.approx([ci.low, ci.high])
    assert c["welch"]["ci"] == c["ci"] and c["equivalent"] == (-50 <= c["ci"][0] and c["ci"][1] <= 50)
    md = (out / "compare.md").read_text()
    for text in (md, (out / "compare.html").read_text(), p.stdout):
        assert "Welch (no seed in common)" in text and "the Welch interval" in text
    assert "The paired tests by seed" not in md
    # seeds in common but another network (dropout): Welch, said so
    comps = comparison["json"]["comparisons"]
    assert [(x["test"], x["pairing"]) for x in comps] == [("welch", "different networks")] * 2
    assert "Welch (different networks)" in comparison["md"] and "Welch (different networks)" in comparison["html"]
