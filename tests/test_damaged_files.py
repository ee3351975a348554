"""A damaged summary.json or study.json ends in one line naming the file, worded as damaged, exit
status 2, with nothing created or changed; a study that meets one damaged run folder reports that
run as damaged, trains the others and records its end.

Each table row is (what the file holds, a word of its message); each is tried on every command
that reads the file, on a copy of one tiny real study.
"""
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cifarlab import cli

TINY = ["subset=300", "val_split=100", "epochs=1", "widths=[4]", "dense=8", "threads=1", "eval_batch_size=300"]
STUDY = ["--only", "vgg1", "--backend", "inline", *TINY]
RUN = Path("runs/vgg1/seed0")
FUTURE = {"format_version": 99, "test_acc": 0.5, "settings": {}, "invocations": []}

# (name, the file's bytes, a fragment of the one line): the damage both records can have
DAMAGE = [
    ("invalid", b"{not json", "damaged (not JSON"),
    ("empty", b"", "damaged (empty)"),
    ("blank", b"  \n", "damaged (empty)"),
    ("list", b"[1, 2]", "damaged (a JSON list"),
    ("number", b"3", "damaged (a JSON int"),
    ("not_utf8", b'{"test_acc": "\xff\xfe"}', "damaged (not UTF-8"),
    ("truncated", None, "damaged (not JSON"),  # the real file cut in half
    ("future_version", json.dumps(FUTURE).encode(), "newer than this cifarlab reads"),
    ("malformed_version", json.dumps({**FUTURE, "format_version": "1"}).encode(), "not a format version"),
    ("deep", b"[" * 100_000, "damaged"),
]
SUMMARY_ONLY = [
    ("no_test_acc", b'{"seed": 0}', "damaged (no 'test_acc')"),
    ("test_acc_string", b'{"test_acc": "0.5"}', "damaged ('test_acc' is '0.5')"),
    ("test_acc_out_of_range", b'{"test_acc": 7}', "damaged (test_acc 7 is no accuracy)"),
]
STUDY_ONLY = [
    ("no_settings", b'{"invocations": []}', "damaged (no 'settings')"),
    ("settings_list", b'{"settings": [], "invocations": []}', "damaged ('settings' is [])"),
    ("no_invocations", b'{"settings": {}}', "damaged (no 'invocations')"),
    ("invocation_string", b'{"settings": {}, "invocations": ["x"]}', "damaged (invocation 0 is 'x')"),
]

# commands reading summary.json (S: the study folder, R: its run folder, T: a folder not there)
SUMMARY_COMMANDS = {
    "evaluate": ["evaluate", "R"],
    "evaluate_tta": ["evaluate", "--tta", "R"],
    "resume": ["train", "--resume", "R"],
    "compare": ["compare", "R", "--out", "T"],
    "report": ["report", "S"],
    "export": ["export", "R", "--format", "safetensors", "--out", "T"],
}
STUDY_COMMANDS = {
    "study": ["study", "--out", "S", *STUDY],
    "report": ["report", "S"],
    "carry_out": ["carry", "out", "S", "T"],
}


def _tree(root: Path) -> dict:
    """Every file under root with its bytes' digest and mtime (lock files, which only hold a PID, aside)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in (".lock", ".study.lock")}


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir):
    """A real tiny study of one finished run (vgg1, seed 0, one epoch on 200 images)."""
    out = tmp_path_factory.mktemp("damaged") / "study"
    assert cli.main(["study", "--out", str(out), *STUDY]) == 0
    assert (out / RUN / "summary.json").is_file()
    return out


def _copy(study: Path, tmp_path: Path) -> Path:
    s = tmp_path / "study"
    shutil.copytree(study, s)
    return s


def _damage(path: Path, content: bytes | None) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2] if content is None else content)


def _run(capsys, words: list[str], s: Path, tmp_path: Path) -> tuple[int, str]:
    subst = {"S": str(s), "R": str(s / RUN), "T": str(tmp_path / "new")}
    capsys.readouterr()
    rc = cli.main([subst.get(w, w) for w in words])
    return rc, capsys.readouterr().err


def _one_line(err: str, path: Path, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0] and fragment in lines[0], err
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("command", SUMMARY_COMMANDS)
@pytest.mark.parametrize("name,content,fragment", DAMAGE + SUMMARY_ONLY, ids=[d[0] for d in DAMAGE + SUMMARY_ONLY])
def test_a_damaged_summary_is_one_line(study, tmp_path, capsys, command, name, content, fragment):
    s = _copy(study, tmp_path)
    path = s / RUN / "summary.json"
    _damage(path, content)
    before = _tree(tmp_path)
    rc, err = _run(capsys, SUMMARY_COMMANDS[command], s, tmp_path)
    assert rc == 2, err
    _one_line(err, path, fragment)
    if "damaged" in fragment:
        assert "cifarlab train --resume" in err  # how to write it again
    assert _tree(tmp_path) == before and not (tmp_path / "new").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", STUDY_COMMANDS)
@pytest.mark.parametrize("name,content,fragment", DAMAGE + STUDY_ONLY, ids=[d[0] for d in DAMAGE + STUDY_ONLY])
def test_a_damaged_study_json_is_one_line(study, tmp_path, capsys, command, name, content, fragment):
    s = _copy(study, tmp_path)
    path = s / "study.json"
    _damage(path, content)
    before = _tree(tmp_path)
    rc, err = _run(capsys, STUDY_COMMANDS[command], s, tmp_path)
    assert rc == 2, err
    _one_line(err, path, fragment)
    assert _tree(tmp_path) == before and not (tmp_path / "new").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name,content,fragment", DAMAGE[:4] + SUMMARY_ONLY[:1], ids=[d[0] for d in
                                                                                   DAMAGE[:4] + SUMMARY_ONLY[:1]])
def test_a_study_reports_a_damaged_run_and_trains_the_others(study, tmp_path, capsys, name, content, fragment):
    s = _copy(study, tmp_path)
    path = s / RUN / "summary.json"
    _damage(path, content)
    damaged = path.read_bytes()
    capsys.readouterr()
    rc = cli.main(["study", "--out", str(s), "--seeds", "2", *STUDY])
    out = capsys.readouterr().out
    assert rc == 1, out  # a run that needs the user's hand: not a clean exit
    assert path.read_bytes() == damaged  # the user's file is left for them to look at
    assert (s / "runs/vgg1/seed1/summary.json").is_file()  # the other run trained
    line = next(x for x in out.splitlines() if x.strip().startswith("vgg1/seed0:"))
    assert "damaged" in line and str(path) in line and fragment in line, out
    last = json.loads((s / "study.json").read_text())["invocations"][-1]
    assert last["finished"] is not None and last["counts"]["damaged"] == 1 and last["counts"]["trained"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("name,content,fragment", DAMAGE[:4], ids=[d[0] for d in DAMAGE[:4]])
def test_predict_reads_a_checkpoint_without_norm_through_the_summary_reader(study, tmp_path, capsys, cifar,
                                                                            name, content, fragment):
    """A checkpoint of a version that kept its normalisation in summary.json only: a damaged summary is
    one line naming it, not a traceback, and nothing is predicted."""
    from PIL import Image

    from cifarlab import checkpoint
    s = _copy(study, tmp_path)
    state = checkpoint.load(s / RUN / "checkpoint.pt")
    state.pop("norm")
    state.pop(checkpoint.DIGEST, None)
    checkpoint.save(s / RUN / "checkpoint.pt", state)  # as that version wrote it, with its digest
    image = tmp_path / "frog.png"
    Image.fromarray(cifar.x_test[0].transpose(1, 2, 0)).save(image)
    path = s / RUN / "summary.json"
    _damage(path, content)
    before = _tree(tmp_path)
    rc, err = _run(capsys, ["predict", "R", str(image)], s, tmp_path)
    assert rc == 2, err
    _one_line(err, path, fragment)
    assert _tree(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize("out,fragment", [("/sys", "cannot write into the export folder /sys"),
                                          ("/sys/cifarlab-export", "cannot create the export folder")])
def test_export_into_a_folder_that_cannot_be_written_is_one_line(study, tmp_path, capsys, out, fragment):
    """/sys refuses new entries even to root (the tests' user, for whom a chmod'ed folder stays writable)."""
    s = _copy(study, tmp_path)
    before = _tree(tmp_path)
    rc, err = _run(capsys, ["export", "R", "--format", "safetensors", "--out", out], s, tmp_path)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err
    assert _tree(tmp_path) == before and not Path("/sys/cifarlab-export").exists()


@pytest.mark.slow
def test_the_fix_a_damaged_summary_names_writes_it_again(study, tmp_path, capsys):
    """Moving the damaged summary.json away and resuming, as its message says, writes it again."""
    from cifarlab.runfolder import read_summary
    s = _copy(study, tmp_path)
    good = read_summary(s / RUN)
    (s / RUN / "summary.json").write_bytes(b"{not json")
    (s / RUN / "summary.json").rename(tmp_path / "damaged-summary.json")
    assert _run(capsys, ["train", "--resume", "R"], s, tmp_path)[0] == 0
    again = read_summary(s / RUN)
    assert (again["seed"], again["epochs"], again["train_images"]) == (good["seed"], good["epochs"],
                                                                       good["train_images"])
