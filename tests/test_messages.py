"""Messages: a wrong --data, an unreadable image and a huge image each give one cifarlab line, naming
the real cause; nothing is created."""
import os
from pathlib import Path

import pytest
from PIL import Image

from cifarlab.cli import main

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "run_v0_interrupted"


def _snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _lines(capsys):
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return err.strip().splitlines()


# --data given and not usable: refused, never a silent fall back to $CIFARLAB_DATA nor a download.
DATA_CASES = [
    ("{tmp}/nonexistent", "--data {tmp}/nonexistent: no such file or folder; a data folder holds "
                          "cifar-10-batches-bin or cifar-10-batches-py"),
    ("{tmp}/loop", "--data {tmp}/loop: too many levels of symbolic links; a data folder holds"),
    ("{tmp}/notes.txt", "--data {tmp}/notes.txt is a file, not a CIFAR-10 folder or archive; a data folder "
                        "holds cifar-10-batches-bin"),
]
VERBS = [["train", "--preset", "vgg1", "--out", "{tmp}/run", "epochs=1"], ["evaluate", str(FIXTURE_RUN)],
         ["study", "--only", "vgg1", "--out", "{tmp}/study"]]


@pytest.mark.parametrize("data,words", DATA_CASES, ids=[c[0] for c in DATA_CASES])
@pytest.mark.parametrize("verb", VERBS, ids=[v[0] for v in VERBS])
def test_a_data_path_that_is_not_there_is_refused(tmp_path, capsys, monkeypatch, data_dir, verb, data, words):
    monkeypatch.setenv("CIFARLAB_DATA", str(data_dir))  # would be used silently before
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not data\n")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    before = _snapshot(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in verb] + ["--data", data.replace("{tmp}", str(tmp_path))]
    assert main(argv) == 2
    lines = _lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"cifarlab {verb[0]}: error: " + words.replace("{tmp}", str(tmp_path))), lines
    assert _snapshot(tmp_path) == before


IMAGE_CASES = [
    ("loop", "is a symbolic link that loops"),
    ("missing", "no such file"),
    ("truncated.png", "damaged or truncated image"),
]


@pytest.mark.parametrize("name,words", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_an_unreadable_image_is_named_for_its_real_cause(tmp_path, capsys, name, words):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "good.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "good.png").read_bytes()[:60])
    before = _snapshot(tmp_path)
    assert main(["predict", str(FIXTURE_RUN), str(tmp_path / name)]) == 1
    lines = _lines(capsys)
    assert lines[0] == f"cifarlab predict: error: {tmp_path / name}: {words}" or \
        lines[0].startswith(f"cifarlab predict: error: {tmp_path / name}: {words}"), lines
    assert len(lines) == 2 and lines[1] == "cifarlab predict: 1 of 1 file(s) failed", lines
    assert _snapshot(tmp_path) == before


def test_a_decompression_bomb_warning_is_one_cifarlab_line(tmp_path, capsys, monkeypatch):
    """A real image over Pillow's pixel limit (the limit lowered, so the image stays small): one line of ours
    instead of Python's warning lines, and the prediction is still made."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 40), (10, 200, 10)).save(path)  # 1600 pixels: over 1000, under twice it
    assert main(["predict", str(FIXTURE_RUN), str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [f"cifarlab: warning: {path}: a very large image (40x40, 1,600 pixels, "
                                        f"over Pillow's 1,000); it was read and shrunk to 32x32"], err
    assert str(path) in out


def test_an_image_over_twice_the_limit_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    path = tmp_path / "bomb.png"
    Image.new("RGB", (40, 40)).save(path)
    assert main(["predict", str(FIXTURE_RUN), str(path)]) == 1
    lines = _lines(capsys)
    assert lines[0].startswith(f"cifarlab predict: error: {path}: refused, too many pixels"), lines
    assert len(lines) == 2, lines
