"""Files and folders this user may not read or write: one cifarlab line naming the path, exit status 2,
nothing created. As root every file is readable, so there the command runs in a user namespace
(`unshare -U`), where it is an unprivileged user as it would be on a shared machine."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "run_v0_interrupted"
SRC = Path(__file__).parents[1] / "src"
pytestmark = pytest.mark.slow


def _as_user() -> list[str]:
    """The command prefix that runs cifarlab as a user without root's right to read every file."""
    if os.geteuid() != 0:
        return []
    probe = subprocess.run(["unshare", "-U", "true"], capture_output=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("running as root, and no user namespace (unshare -U) to run as another user")
    return ["unshare", "-U"]


def cifarlab(*args, data=None):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    if data is not None:
        env["CIFARLAB_DATA"] = str(data)
    return subprocess.run([*_as_user(), sys.executable, "-m", "cifarlab", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def _snapshot(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_mode) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def data_copy(tmp_path_factory, data_dir):
    """A copy of the real data set whose modes the cases change (never the shared one's)."""
    src = next(p for p in (data_dir, data_dir / "cifar-10-batches-bin") if (p / "test_batch.bin").is_file())
    dest = tmp_path_factory.mktemp("data") / "cifar-10-batches-bin"
    shutil.copytree(src, dest)
    return dest


# (case, command with {tmp}/{data}/{run}, what to lock and its mode, words of the line, data path to use)
CASES = [
    ("data file unreadable", ["evaluate", "{run}", "--data", "{data}"], ("{data}/test_batch.bin", 0o000),
     ["test_batch.bin: permission denied, so CIFAR-10 cannot be read there", "chmod -R a+rX"]),
    ("data folder unreadable", ["evaluate", "{run}", "--data", "{data}"], ("{data}", 0o000),
     ["cifar-10-batches-bin: permission denied, so CIFAR-10 cannot be read there"]),
    ("data folder unreadable in train", ["train", "--preset", "vgg1", "--out", "{tmp}/out/run", "epochs=1",
                                         "--data", "{data}"], ("{data}", 0o000),
     ["permission denied, so CIFAR-10 cannot be read there"]),
    ("train --out in a read-only folder", ["train", "--preset", "vgg1", "--out", "{tmp}/ro/run", "epochs=1"],
     ("{tmp}/ro", 0o555), ["cannot use {tmp}/ro/run as a run folder: Permission denied"]),
    ("study --out in a read-only folder", ["study", "--only", "vgg1", "--out", "{tmp}/ro/study"],
     ("{tmp}/ro", 0o555), ["{tmp}/ro/study: permission denied to this user"]),
    ("export --out in a read-only folder", ["export", "{run}", "--format", "safetensors", "--out", "{tmp}/ro/e"],
     ("{tmp}/ro", 0o555), ["{tmp}/ro/e", "ermission denied"]),
    ("report of an unreadable study", ["report", "{tmp}/ro"], ("{tmp}/ro", 0o000),
     ["{tmp}/ro", "ermission denied"]),
    ("report --out in a read-only folder", ["report", "{tmp}/study", "--out", "{tmp}/ro/rep"],
     ("{tmp}/ro", 0o555), ["{tmp}/ro/rep", "ermission denied"]),
    ("predict an unreadable image", ["predict", "{run}", "{tmp}/ro/cat.png"], ("{tmp}/ro/cat.png", 0o000),
     ["{tmp}/ro/cat.png: cannot be read: permission denied to this user; give read access"]),
]


@pytest.mark.parametrize("case,command,lock,words", CASES, ids=[c[0] for c in CASES])
def test_a_path_this_user_may_not_use_is_one_line(tmp_path, data_copy, case, command, lock, words):
    (tmp_path / "ro").mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "ro" / "cat.png")
    (tmp_path / "study").mkdir()
    subst = {"tmp": tmp_path, "data": data_copy, "run": FIXTURE_RUN}
    target = Path(lock[0].format(**subst))
    mode = target.stat().st_mode & 0o777
    before = _snapshot(tmp_path)
    target.chmod(lock[1])
    try:
        p = cifarlab(*(a.format(**subst) for a in command), data=data_copy)
    finally:
        target.chmod(mode)
    # predict reports each file and exits 1 when one failed, as its help says; every other verb 2
    many = command[0] == "predict"
    assert p.returncode == (1 if many else 2), (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith(f"cifarlab {command[0]}: error: "), lines
    assert lines[1:] == (["cifarlab predict: 1 of 1 file(s) failed"] if many else []), lines
    for w in words:
        assert w.format(**subst) in lines[0], (w, lines[0])
    assert _snapshot(tmp_path) == before  # nothing created, nothing changed
