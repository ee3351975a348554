"""Run folders are never lost or mixed: refused, locked, checked on resume; a study
keeps every invocation's record and stops whole on Ctrl-C. Real data, tiny runs."""
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

TINY = ["subset=500", "val_split=100", "epochs=1", "threads=1", "eval_batch_size=500"]


def cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "cifarlab", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def error_line(p) -> str:
    lines = [line for line in p.stderr.strip().splitlines() if not line.startswith("Matplotlib is building")]
    assert len(lines) == 1 and ": error: " in lines[0] and "Traceback" not in p.stderr, p.stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run, trained once for the module."""
    out = tmp_path_factory.mktemp("faults") / "run"
    p = cli("train", "--preset", "vgg1", *TINY, "--out", out, "--quiet")
    assert p.returncode == 0, p.stdout + p.stderr
    return out


def _snapshot(run):
    return {f.name: f.read_bytes() for f in run.iterdir() if f.is_file() and f.name != ".lock"}


@pytest.mark.slow
def test_a_folder_holding_a_run_is_refused_unless_forced(finished, tmp_path):
    run = tmp_path / "run"
    import shutil
    shutil.copytree(finished, run)
    before = _snapshot(run)
    p = cli("train", "--preset", "vgg1", *TINY, "--out", run)
    assert p.returncode == 2
    line = error_line(p)
    assert "already holds a finished run" in line and "--resume" in line and "--force" in line
    assert _snapshot(run) == before  # nothing touched
    # --resume of a finished run changes nothing either
    p = cli("train", "--resume", run)
    assert p.returncode == 0 and "already finished" in p.stdout and _snapshot(run) == before
    # --force starts over: a new run, and no file of the old one left behind
    (run / "evaluation.json").write_text("{}")
    p = cli("train", "--preset", "vgg1", *TINY[:-2], "threads=1", "lr=0.01", "--out", run, "--force", "--quiet")
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == 0.01
    assert json.loads((run / "summary.json").read_text()) != json.loads(before["summary.json"])
    assert not (run / "evaluation.json").exists()


@pytest.mark.slow
def test_a_folder_in_use_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".lock", "a") as lock:  # what a training process (or a study's worker) holds
        fcntl.flock(lock, fcntl.LOCK_EX)
        p = cli("train", "--preset", "vgg1", *TINY, "--out", run)
    assert p.returncode == 2 and "is being trained by another process" in error_line(p)
    assert not (run / "config.yaml").exists()


@pytest.mark.slow
def test_two_trainings_into_one_folder_at_once(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "cifarlab", "train", "--preset", "vgg1", *TINY, "--out", str(run), "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    loser = outs[[p.returncode for p in procs].index(2)]
    line = error_line(subprocess.CompletedProcess([], 2, *loser))
    assert "is being trained by" in line or "already holds" in line
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 1 and len((run / "metrics.csv").read_text().splitlines()) == 2


@pytest.mark.slow
def test_resume_after_config_yaml_was_edited_is_refused(finished, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "summary.json").unlink()  # an unfinished run: it has its checkpoint
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["lr"], cfg["widths"] = 0.05, [16, 64, 128]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    edited = (run / "config.yaml").read_bytes()
    p = cli("train", "--resume", run)
    assert p.returncode == 2
    line = error_line(p)
    assert "config.yaml was changed" in line and "lr is 0.05" in line and "widths" in line
    assert "--config" in line and "NEW_FOLDER" in line
    assert (run / "config.yaml").read_bytes() == edited and not (run / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_resume_of_a_damaged_checkpoint_is_one_line(finished, tmp_path, damage):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "summary.json").unlink()
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(b"" if damage == "empty" else data[:len(data) // 2])
    p = cli("train", "--resume", run)
    assert p.returncode == 2
    line = error_line(p)
    assert str(run / "checkpoint.pt") in line and "--force" in line
    assert ("empty (0 bytes)" if damage == "empty" else "truncated or damaged") in line


@pytest.mark.slow
def test_evaluate_on_a_read_only_run_prints_and_warns(finished, tmp_path, capsys, monkeypatch):
    import shutil
    from cifarlab.cli import main
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    os.chmod(run, 0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the write fail as a read-only folder would
        import tempfile
        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        assert main(["evaluate", str(run)]) == 0
    finally:
        os.chmod(run, 0o755)
    out, err = capsys.readouterr()
    assert "test accuracy" in out and "airplane" in out
    assert "could not write" in err and "Permission denied" in err
    assert not (run / "evaluation.json").exists()


@pytest.mark.slow
def test_export_out_that_is_a_file_is_refused(finished, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    p = cli("export", finished, "--format", "safetensors", "--out", target)
    assert p.returncode == 2 and "is a file, not a folder" in error_line(p)
    assert target.read_text() == "not a folder"


@pytest.mark.slow
def test_a_damaged_export_is_one_line(finished, tmp_path):
    import cifarlab
    from cifarlab.inference.export import export_run
    from cifarlab.inference.predict import ModelError
    out = tmp_path / "export"
    export_run(finished, "safetensors", out)
    meta = (out / "model.json").read_text()
    for bad, words in [("{ not json", "not valid JSON"), ("[1, 2]", "holds a list"),
                       (json.dumps({"config": {"blocks": "x"}, "norm": {"mean": [0] * 3, "std": [1] * 3}}),
                        "config is not one cifarlab reads"), (json.dumps({"config": {}}), "no norm")]:
        (out / "model.json").write_text(bad)
        with pytest.raises(ModelError, match=words):
            cifarlab.load(out)
    (out / "model.json").write_text(meta)
    weights = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    with pytest.raises(ModelError, match="truncated"):
        cifarlab.load(out)
    # an ONNX file cut short: a minimal real model, then half of it, in an export from before
    # model.json listed its weights with their SHA-256 (a listed file cut short fails that check)
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 10])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])])
    data = helper.make_model(graph).SerializeToString()
    (out / "model.safetensors").unlink()
    (out / "model.onnx").write_bytes(data[:len(data) // 2])
    unlisted = json.loads(meta)
    assert unlisted.pop("files") == {"model.safetensors": {"sha256": hashlib.sha256(weights).hexdigest(),
                                                          "bytes": len(weights)}}
    unlisted.pop("description_sha256")
    unlisted["format_version"] = 1
    (out / "model.json").write_text(json.dumps(unlisted))
    p = cli("predict", out, tmp_path / "none.png")
    assert p.returncode == 2
    line = error_line(p)
    assert "model.onnx" in line and "not a readable ONNX model" in line


# --- the study ------------------------------------------------------------------------------

def test_study_settings_are_checked_and_written_under_its_lock(tmp_path):
    import threading
    from cifarlab.study.jobs import StudyError
    from cifarlab.study.runner import STUDY_LOCK, open_study
    study = tmp_path / "s"
    study.mkdir()
    mine = {"overrides": ["epochs=1"], "epochs_scale": 1.0, "quick": False}
    other = {"overrides": ["epochs=2"], "epochs_scale": 1.0, "quick": False}
    errors = []

    def second():
        try:
            open_study(study, mine, {})
        except StudyError as e:
            errors.append(str(e))

    with open(study / STUDY_LOCK, "a") as lock:  # another invocation between its check and its write
        fcntl.flock(lock, fcntl.LOCK_EX)
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.5)
        assert t.is_alive() and not (study / "study.json").exists()  # it waits for the lock
        (study / "study.json").write_text(json.dumps({"settings": other, "invocations": [{"pid": 1}]}))
        fcntl.flock(lock, fcntl.LOCK_UN)
    t.join(10)
    assert errors and "was made with" in errors[0]
    assert json.loads((study / "study.json").read_text())["settings"] == other


def test_two_invocations_at_once_both_keep_their_record(tmp_path):
    from cifarlab.study.runner import close_study, open_study
    settings = {"overrides": ["epochs=1"], "epochs_scale": 1.0, "quick": False}
    a = open_study(tmp_path, settings, {"presets": ["vgg1"]})  # the second opens before the first closes
    b = open_study(tmp_path, settings, {"presets": ["vgg2"]})
    result = {"status": "trained"}
    close_study(tmp_path, a, [result], 1.0)
    close_study(tmp_path, b, [result, result], 2.0)
    invs = json.loads((tmp_path / "study.json").read_text())["invocations"]
    assert [i["options"]["presets"] for i in invs] == [["vgg1"], ["vgg2"]]
    assert [i["counts"]["trained"] for i in invs] == [1, 2] and all(i["finished"] for i in invs)


STUDY = ["--only", "vgg1", "--backend", "inline", *TINY]


@pytest.mark.parametrize("holder", ["pid", "none"])  # the holder wrote its pid into the lock, or nothing
def test_a_run_another_process_holds_is_busy_and_the_study_says_why(tmp_path, capsys, holder):
    from cifarlab.cli import main
    study = tmp_path / "s"
    run = study / "runs" / "vgg1" / "seed0"
    run.mkdir(parents=True)
    with open(run / ".lock", "a") as lock:  # what a training process (another study's worker) holds
        fcntl.flock(lock, fcntl.LOCK_EX)
        if holder == "pid":
            lock.write(f"{os.getpid()}\n")
            lock.flush()
        rc = main(["study", "--out", str(study), *STUDY])
    out = capsys.readouterr().out
    who = f"process {os.getpid()}" if holder == "pid" else "another process"
    why = (f"busy held by {who} through its lock {run / '.lock'} (another study, or `cifarlab train` on this "
           f"folder, is training it); left as it is: run the study again once that process has ended")
    assert rc == 1 and f"[1/1] vgg1/seed0: {why} (" in out and f"\n  vgg1/seed0: {why}\n" in out, out
    assert not (run / "config.yaml").exists() and not (run / "checkpoint.pt").exists()  # nothing trained
    assert json.loads((study / "study.json").read_text())["invocations"][0]["counts"]["busy"] == 1


@pytest.mark.slow
def test_a_finished_run_with_other_settings_is_reported_not_skipped(tmp_path):
    study = tmp_path / "s"
    p = cli("study", "--out", study, *STUDY)
    assert p.returncode == 0, p.stdout + p.stderr
    run = study / "runs" / "vgg1" / "seed0"
    summary = (run / "summary.json").read_bytes()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["epochs"] = 2  # as a study with other settings would have left it
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    p = cli("study", "--out", study, *STUDY)
    assert p.returncode == 1
    assert "vgg1/seed0: mismatch" in p.stdout and "epochs is 2 in its config.yaml, 1 in this study" in p.stdout
    assert (run / "summary.json").read_bytes() == summary
    meta = json.loads((study / "study.json").read_text())
    assert meta["invocations"][1]["counts"]["mismatch"] == 1


@pytest.mark.slow
def test_ctrl_c_stops_the_whole_study_and_every_run_resumes(tmp_path):
    study = tmp_path / "s"
    over = ["subset=2000", "val_split=200", "epochs=3", "threads=1", "eval_batch_size=500"]
    cmd = [sys.executable, "-m", "cifarlab", "study", "--out", str(study), "--only", "vgg1,vgg2,vgg3",
           "--workers", "1", *over]
    # its own process group, which a terminal's Ctrl-C reaches whole
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = study / "runs" / "vgg1" / "seed0"
    deadline = time.time() + 300
    while not (first / "checkpoint.pt").exists():
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGINT)
    t0 = time.time()
    out, err = p.communicate(timeout=120)
    assert time.time() - t0 < 60
    assert p.returncode == 130, out + err
    assert "Continue with the same command: cifarlab study --out" in err and "Traceback" not in err
    time.sleep(2)  # nothing of the study trains on
    gone = subprocess.run(["pgrep", "-s", str(p.pid)], capture_output=True, text=True)
    assert gone.stdout.strip() == "", "a worker outlived the study"
    assert not (first / "summary.json").exists()
    assert not any((study / "runs" / name / "seed0" / "config.yaml").exists() for name in ("vgg2", "vgg3"))
    assert "interrupted" in (first / "train.log").read_text()
    inv = json.loads((study / "study.json").read_text())["invocations"][-1]
    assert inv["interrupted"] and inv["finished"]
    # the interrupted run resumes from its checkpoint (--only may narrow a later invocation)
    again = cli("study", "--out", study, "--only", "vgg1", "--workers", "1", *over)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "vgg1/seed0: resumed" in again.stdout and (first / "summary.json").exists()


@pytest.mark.slow
def test_resume_with_out_is_refused_and_touches_neither_folder(tmp_path):
    # --resume continues RUN in place: an --out beside it named a second folder that was never used
    from cifarlab.config import apply_overrides, load_preset
    from cifarlab.train import train
    run = tmp_path / "run"
    cfg = apply_overrides(load_preset("vgg1"), TINY[:-1] + ["epochs=2", "test=false"])
    train(cfg, run, progress=False, log=lambda *a: None)
    (run / "summary.json").unlink()  # as a run cut short after its last checkpoint: one that would resume
    before = _snapshot(run)
    p = cli("train", "--resume", run, "--out", tmp_path / "elsewhere", cwd=tmp_path)
    assert p.returncode == 2
    line = error_line(p)
    assert f"--resume continues the run in {run} in place" in line and "Drop --out" in line
    assert f"--config {run / 'config.yaml'} --out {tmp_path / 'elsewhere'}" in line
    assert _snapshot(run) == before and not (tmp_path / "elsewhere").exists() and not (tmp_path / "runs").exists()
