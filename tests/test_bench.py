"""`cifarlab bench` at tiny sizes on real data: the fields it reports and its ratios (no timing claims)."""
import argparse
import json
import subprocess
import sys

import pytest
import torch

from cifarlab.bench import throughput as bench
from cifarlab.cli import bench as bench_cli
from cifarlab.config import apply_overrides, load_preset
from cifarlab.models import build_model
from cifarlab.train import COLUMNS, write_metrics


def parse(*argv):
    p = argparse.ArgumentParser()
    bench_cli.add_parser(p.add_subparsers(), "bench")
    return p.parse_args(["bench", *argv])


@pytest.fixture(scope="module")
def result():
    # --keras-python is this interpreter: without TensorFlow the Keras contender is skipped with a note;
    # with it, Keras runs too. Either way the fields below must be there.
    args = parse("--models", "vgg3,combined", "--reps", "2", "--steps", "2", "--subset", "500",
                 "--peak-gflops", "100", "--peak-bf16-gflops", "200", "--keras-python", sys.executable,
                 "--contenders", "cifarlab,plain,keras,cifarlab-bf16", "--no-eval")
    return bench.run(args, log=lambda *a: None)


@pytest.mark.slow
def test_fields_and_ratios(result):
    assert result["peak_gflops"] == 100 and result["peak_source"] == "given"
    assert "torch" in result["device"]
    assert [m["model"] for m in result["models"]] == ["vgg3", "combined"]
    native = bench.bf16_units(torch.device("cpu"))  # timed wherever the CPU has bf16 instructions
    for m in result["models"]:
        rows = {r["contender"]: r for r in m["rows"]}
        assert {"cifarlab", "plain"} <= set(rows)
        assert ("keras" in rows) != ("keras" in m["notes"])  # run, or skipped with a note
        # the bf16 row runs where the CPU has bf16 units (faster than fp32 or not), else a note says why not
        assert ("cifarlab-bf16" in rows) == native != ("cifarlab-bf16" in m["notes"])
        own = rows["cifarlab"]["images_per_second"]
        for r in rows.values():
            assert len(r["samples"]) == 2 and r["min"] <= r["images_per_second"] <= r["max"]
            assert r["ratio"] == pytest.approx(own / r["images_per_second"])
            peak = 200 if r["precision"] == "bf16" else 100
            assert r["fraction_of_peak"] == pytest.approx(r["gflops"] / peak)
        assert rows["cifarlab"]["ratio"] == pytest.approx(1.0)
        if native:
            own16 = rows["cifarlab-bf16"]["images_per_second"]
            assert rows["cifarlab"]["ratio_bf16"] == pytest.approx(own16 / own)
    text = bench.report(result)
    assert "cifarlab is" in text and "plain" in text
    assert ("cifarlab-bf16 is" in text) == native


@pytest.mark.slow
def test_keras_computes_on_as_many_threads_as_cifarlab():
    pytest.importorskip("tensorflow", reason="the Keras contender needs the keras extra")
    before = torch.get_num_threads()
    try:
        r = bench.run(parse("--models", "vgg3", "--contenders", "cifarlab,keras", "--reps", "1", "--steps", "2",
                            "--subset", "500", "--threads", "1", "--no-peak", "--no-eval",
                            "--keras-python", sys.executable), log=lambda *a: None)
    finally:
        torch.set_num_threads(before)
    m = r["models"][0]
    assert {x["contender"] for x in m["rows"]} == {"cifarlab", "keras"}
    assert m["info"]["keras"]["intra_op_threads"] == 1  # TensorFlow's default would be every core


def test_flops_counted_from_layer_shapes():
    net = build_model(load_preset("vgg3"))
    # conv: 2 * outputs * in_channels * 9; linear: 2 * outputs * inputs
    convs = [(32, 32, 3, 32), (32, 32, 32, 32), (16, 16, 32, 64), (16, 16, 64, 64), (8, 8, 64, 128),
             (8, 8, 128, 128)]
    fwd = sum(2 * h * w * o * i * 9 for h, w, i, o in convs) + 2 * 128 * 2048 + 2 * 10 * 128
    assert bench.forward_flops(net) == fwd
    first = 2 * 32 * 32 * 32 * 3 * 9
    assert bench.train_flops(net) == 3 * fwd - first
    combined = build_model(apply_overrides(load_preset("vgg3"), ["batchnorm=true"]))
    assert bench.forward_flops(combined) == fwd  # BN is not counted: no multiply-accumulate


def test_time_to_accuracy_of_run_folders(tmp_path):
    hist = [{k: 0.0 for k in COLUMNS} | {"epoch": e, "val_acc": a, "wall_seconds": 10.0 * e}
            for e, a in [(1, 0.5), (2, 0.86), (3, 0.881)]]
    write_metrics(tmp_path, hist)
    r = bench.run(parse("--runs", str(tmp_path), "--target", "0.88"), log=lambda *a: None)
    assert r["models"] == [] and "peak_gflops" not in r  # --runs alone: no throughput measured
    assert r["time_to_accuracy"][0]["reached"] == {"epoch": 3, "wall_seconds": 30.0, "acc": 0.881, "at": "epoch"}
    assert bench.time_to_accuracy(hist, 0.9) is None


@pytest.mark.slow
def test_time_to_accuracy_counts_the_final_test_evaluation(tmp_path):
    # A real run with test-time augmentation: its epoch rows measure the test set without TTA,
    # its summary the test set with it. A target between the two is reached at the end.
    from cifarlab.train import train
    cfg = apply_overrides(load_preset("fast_combined"), ["subset=1000", "epochs=2", "batch_size=100", "tta=1"])
    s = train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    best_row = max(r["val_acc"] for r in bench.read_metrics(tmp_path / "run"))
    # just above every epoch row; a final accuracy equal to the best row's (a network near chance gives
    # 0.1 twice) is not above it, though summary.json's float32 can lie above metrics.csv's 6 digits
    target = best_row + 1e-6
    hit = bench.run_time_to_accuracy(tmp_path / "run", target)
    if s["test_acc"] >= target:  # TTA helped: only the final evaluation reaches the target
        assert hit == {"epoch": 2, "wall_seconds": s["total_seconds"], "acc": s["test_acc"], "at": "final"}
    else:
        assert hit is None
    assert bench.run_time_to_accuracy(tmp_path / "run", min(best_row, s["test_acc"]))["at"] == "epoch"


def test_bad_model_and_contender_are_errors():
    with pytest.raises(ValueError, match="unknown contender"):
        bench.run(parse("--contenders", "cifarlab,tf", "--no-peak", "--models", "vgg3"), log=lambda *a: None)
    with pytest.raises(ValueError, match="unknown model"):
        bench.run(parse("--models", "resnet", "--no-peak"), log=lambda *a: None)


@pytest.mark.slow
def test_cli_writes_json(tmp_path):
    out = tmp_path / "b.json"
    p = subprocess.run([sys.executable, "-m", "cifarlab", "bench", "--models", "vgg3", "--contenders",
                        "cifarlab", "--reps", "1", "--steps", "1", "--subset", "400",
                        "--no-peak", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    assert r["models"][0]["rows"][0]["contender"] == "cifarlab"
    assert "img/s" in p.stdout
    m = r["models"][0]
    for k in ("eval_fp32", "eval_bf16"):  # the whole 10,000-image test set, timed
        assert m[k]["images"] == 10_000 and m[k]["seconds"] > 0 and 0 <= m[k]["acc"] <= 1


BAD_OPTIONS = [
    (["--models", "vgg3,resnet"], "unknown model 'resnet'; choose from: vgg3, combined"),
    (["--contenders", "cifarlab,tf,jax"],
     "unknown contenders 'tf', 'jax'; choose from: cifarlab, plain, keras, cifarlab-bf16, keras-bf16"),
    (["--reps", "0"], "--reps 0: must be 1 or more"),
    (["--steps", "0"], "--steps 0: must be 1 or more"),
    (["--steps", "3", "--subset", "500"], "--steps 3: 3 steps and 5 warm-up steps of batch 64 need 512 distinct "
                                          "training images, and --subset 500 gives 500; use --steps 2 or fewer, "
                                          "or --subset 512 or more"),
    (["--steps", "800"], "no subset is that large: at most 776 steps fit in the 50,000 training images"),
    (["--subset", "60000"], "--subset 60000 is not a subset a run takes (subset=60000: must be a whole number"),
    (["--models", "combined", "--runs", "x", "--reps", "-1"], "--reps -1"),
    (["--plain-workers", "-1"], "--plain-workers -1: must be 0 or more"),
    (["--peak-gflops", "-5"], "--peak-gflops -5: a peak in GFLOP/s, above 0"),
    (["--peak-bf16-gflops", "nan"], "--peak-bf16-gflops nan: a peak in GFLOP/s"),
    (["--runs", "x", "--target", "88"], "--target 88: an accuracy as a fraction, above 0 and at most 1 "
                                        "(0.88 for 88%)"),
    (["--runs", "x", "--target", "0"], "--target 0: an accuracy as a fraction"),
    (["--busy", "-1"], "--busy -1: the number of busy processes beside the contenders, 0 to"),
]


@pytest.mark.parametrize("argv,words", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_refused_before_any_work(argv, words):
    logged = []
    with pytest.raises(bench.BenchError) as e:
        bench.run(parse(*argv), log=logged.append)
    assert words in str(e.value)
    assert logged == []  # not even the device: no thread set-up, no peak, no data


def test_the_steps_bound_is_the_subset_s_distinct_batches():
    bench.check_args(parse("--steps", "2", "--subset", "500"))  # 7 batches of 64 in 500 images
    bench.check_args(parse("--steps", "776", "--subset", "0"))  # 0: all 50,000
    with pytest.raises(bench.BenchError, match="--subset 49984 or more"):
        bench.check_args(parse("--steps", "776", "--subset", "40000"))
    bench.check_args(parse("--runs", "x", "--steps", "1000"))  # --runs alone measures no model


def test_cli_refuses_bad_options_in_one_line(capsys):
    from cifarlab.cli import main
    assert main(["bench", "--models", "resnet", "--reps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cifarlab bench: error: unknown model 'resnet'; choose from: vgg3, combined"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] not in "ZX"  # a zombie or a dead process is not running
    except FileNotFoundError:
        return False


def test_busy_processes_run_beside_the_block_and_end_with_it():
    """--busy N: N real processes, each taking CPU time while the block runs, all gone after it,
    whether it ends normally or by an error."""
    import time
    with bench.busy_processes(2) as pids:
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        ticks = lambda p: sum(map(int, open(f"/proc/{p}/stat").read().split(") ")[1].split()[11:13]))  # noqa: E731
        before = [ticks(p) for p in pids]
        time.sleep(0.5)
        assert all(ticks(p) > b for p, b in zip(pids, before))  # busy: user+system time grows
    assert not any(_alive(p) for p in pids)
    with pytest.raises(RuntimeError):
        with bench.busy_processes(1) as pids:
            raise RuntimeError("a contender failed")
    assert not _alive(pids[0])
    with bench.busy_processes(0) as none:
        assert none == []


@pytest.mark.slow
def test_a_bench_beside_busy_processes_says_so():
    args = parse("--models", "vgg3", "--contenders", "cifarlab", "--reps", "1", "--steps", "1", "--subset", "400",
                 "--no-peak", "--no-eval", "--busy", "1")
    result = bench.run(args, log=lambda *a: None)
    assert result["busy"] == 1 and result["models"][0]["rows"][0]["images_per_second"] > 0
    assert "timed beside 1 busy process (a plain Python loop each)" in bench.report(result)
