"""Values far past any useful one, names that are not what they look like, and files that are not files:
each is refused in one line with exit status 2 before anything is created (issue table: values that
crashed after files were written, silent acceptance, hangs, messages).

The table runs `cifarlab.cli.main` in this process; each case fails before any data is read.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifarlab import config
from cifarlab.cli import _interrupted, main
from cifarlab.config import ConfigError, load_file, load_preset

T = "train --preset vgg3 --out run".split()

# (argv, what the one line must say); "{tmp}" is the case's folder, where files below are made
CASES = [
    # values that passed the checks and crashed mid-run, after the run folder was written
    (T + ["seed=1152921504606846976"], "seed=1152921504606846976: must be a whole number from 0 to 2147483647"),
    (T + ["seed=2147483648"], "from 0 to 2147483647"),
    (T + ["lr=1e300"], "lr=1e+300: must be a finite number above 0 and at most 100"),
    (T + ["schedule=piecewise", "boundaries=[10]", "values=[0.1,1.0e+300]"], "values[1]"),
    (T + ["widths=[100000000000000000000,64,128]"], "widths[0]=100000000000000000000: must be a whole number "
                                                     "from 1 to 4096"),
    (T + ["dense=1.0e+20"], "dense=100000000000000000000: must be a whole number from 1 to 65536"),
    (T + ["epochs=1.0e+12"], "epochs=1000000000000: must be a whole number from 1 to 100000"),
    (T + ["batch_size=1.0e+15"], "batch_size=1000000000000000: must be a whole number from 1 to 50000"),
    (T + ["threads=1.0e+15"], "threads=1000000000000000: must be a whole number from 0 to 1024"),
    (T + ["bias_lr_scale=1.0e+300"], "bias_lr_scale"),
    (T + ["weight_decay=1.0e+300"], "weight_decay"),
    (T + ["name=caf\udce9"], "name='caf\\udce9': not UTF-8 text"),  # byte 0xe9 of a Latin-1 shell
    (T + ["description=\udcff"], "description='\\udcff': not UTF-8 text"),
    ("study --only vgg1 --out s --epochs-scale nan".split(), "--epochs-scale nan: must be a finite number above 0"),
    ("study --only vgg1 --out s --epochs-scale inf".split(), "--epochs-scale inf: must be a finite number above 0"),
    ("study --only vgg1 --out s --epochs-scale 0".split(), "--epochs-scale 0.0: must be a finite number above 0"),
    # accepted silently before
    (["train", "--preset", "", "--out", "run"], "unknown preset ''; choose one of: adam"),
    (["train", "--preset", "../elsewhere/my", "--out", "run"], "unknown preset '../elsewhere/my'"),
    (["train", "--preset", "vgg3.yaml", "--out", "run"], "unknown preset 'vgg3.yaml'"),
    (["train", "--config", "", "--out", "run"], "the config file's path is empty"),
    (["study", "--only", "", "--out", "s"], "--only '' names no preset"),
    (["study", "--only", ",", "--out", "s"], "--only ',' names no preset"),
    (["study", "--only", " , ,", "--out", "s"], "names no preset"),
    (["train", "--preset", "vgg3", "name=../../x"], "name='../../x': must be a plain file name"),
    (["train", "--preset", "vgg3", "name=a/b"], "name='a/b': must be a plain file name"),
    (["train", "--preset", "vgg3", "name=.."], "name='..': must be a plain file name"),
    (["train", "--preset", "vgg3", "name=" + "x" * 201], "at most 200"),
    (T + ["reference={seed_report: .nan}"], "reference.seed_report=nan: must be a test accuracy in percent"),
    (T + ["reference={seed_report: high}"], "reference.seed_report='high': must be a test accuracy"),
    (T + ["reference={seed_report: 140}"], "reference.seed_report=140"),
    (T + ["sync_bn=true", "device=cpu"], "sync_bn=true needs GPUs"),
    (["train", "--config", "{tmp}/twice.yaml", "--out", "run"], "not valid YAML at line 3, column 1: key 'lr' "
                                                             "appears twice (lines 2 and 3)"),
    (["train", "--config", "{tmp}/nested_twice.yaml", "--out", "run"], "key 'a' appears twice"),
    (["train", "--config", "{tmp}/intkey.yaml", "--out", "run"], "intkey.yaml: key 1 is not a setting's name"),
    # hangs before: a FIFO read as a config or an image, an endless device
    (["train", "--config", "{tmp}/fifo", "--out", "run"], "fifo is not a regular file"),
    (["train", "--config", "/dev/zero", "--out", "run"], "config file /dev/zero is not a regular file"),
    (["train", "--config", "{tmp}/huge.yaml", "--out", "run"], "huge.yaml is over 1 MiB"),
    (["predict", "{tmp}", "{tmp}/fifo"], "image {tmp}/fifo is not a regular file (a pipe, device or socket)"),
    (["predict", "{tmp}/fifo", "x.png"], "model {tmp}/fifo is not a regular file"),
    (["predict", "{tmp}", "/dev/zero"], "image /dev/zero is not a regular file"),
    # messages
    (["predict", "{tmp}", "http://example.com/cat.png"], "image http://example.com/cat.png: a URL; predict "
                                                          "reads local files, so download it first"),
    (["predict", "https://example.com/run", "x.png"], "model https://example.com/run: a URL"),
    # key=value after an option is an override too: this one's value is then refused by name
    (["train", "--preset", "vgg3", "epochs=1", "--out", "run", "lr=1e300"], "lr=1e+300"),
    (["train", "--out", "run", "--quiet", "seed=-1"], "seed=-1"),
]

FILES = {
    "twice.yaml": b"base: vgg3\nlr: 0.1\nlr: 0.2\n",
    "nested_twice.yaml": b"reference: {a: 1, a: 2}\n",
    "intkey.yaml": b"base: vgg3\n1: 2\n",
    "huge.yaml": b"# padding\n" * 110_000,
}


def _snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def folder(tmp_path, monkeypatch):
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
    os.mkfifo(tmp_path / "fifo")
    monkeypatch.chdir(tmp_path)  # default run and study folders would land here
    return tmp_path


def _one_line_refusal(argv, capsys):
    """Run the command; return its one stderr line after checking status 2 and no traceback."""
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own refusals
        rc = e.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"cifarlab {argv[0]}: error: "), err
    return lines[0]


@pytest.mark.parametrize("argv,words", CASES, ids=[" ".join(a)[:80] for a, _ in CASES])
def test_refused_in_one_line_and_nothing_created(folder, capsys, argv, words):
    argv = [a.replace("{tmp}", str(folder)) for a in argv]
    before = _snapshot(folder)
    line = _one_line_refusal(argv, capsys)
    assert words.replace("{tmp}", str(folder)) in line
    assert _snapshot(folder) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="device=auto is a GPU here, where sync_bn applies")
def test_sync_bn_on_a_machine_without_gpus_is_refused(folder, capsys):
    before = _snapshot(folder)
    line = _one_line_refusal(["train", "--preset", "vgg3", "sync_bn=true", "--out", "run"], capsys)
    assert "sync_bn=true needs GPUs" in line and "no GPU" in line
    assert _snapshot(folder) == before
    line = _one_line_refusal(["study", "--only", "vgg1", "--out", "s", "sync_bn=true"], capsys)
    assert "sync_bn=true needs GPUs" in line and "no GPU" in line
    assert _snapshot(folder) == before


def test_an_unknown_option_still_names_itself(folder, capsys):
    line = _one_line_refusal(["train", "--preset", "vgg3", "--out", "run", "--bogus", "epochs=1"], capsys)
    assert "unrecognized arguments: --bogus;" in line and "overrides may come before or after options" in line
    assert not (folder / "run").exists()


def test_overrides_after_options_are_applied(folder):
    """The same settings, before or after an option, resolve to the same config (real argparse, real
    presets): so the case above that is refused names the override that came after --out."""
    from cifarlab.cli import build_parser
    parser = build_parser(["train"])
    args, extra = parser.parse_known_args(["train", "--preset", "vgg3", "epochs=1", "--out", "r", "lr=0.5"])
    assert args.overrides == ["epochs=1"] and extra == ["lr=0.5"]
    cfg = config.resolve_config("vgg3", None, args.overrides + extra)
    assert (cfg.epochs, cfg.lr) == (1, 0.5)


def test_every_preset_keeps_loading_with_the_strict_loader():
    for name in config.preset_names():
        cfg = load_preset(name)
        assert cfg.name == name and all(0 < v <= 100 for v in cfg.reference.values())


def test_bases_that_form_a_cycle_are_one_error(monkeypatch):
    """Presets ship with the package; here three stand-ins form cycles (the package's files are not edited)."""
    texts = {"a": "base: b\nepochs: 2\n", "b": "base: a\n", "c": "base: c\n", "d": "base: vgg3\nepochs: 3\n"}
    real, real_names = config._preset_text, config.preset_names()
    monkeypatch.setattr(config, "preset_names", lambda: sorted(texts) + real_names)
    monkeypatch.setattr(config, "_preset_text", lambda n: texts[n] if n in texts else real(n))
    with pytest.raises(ConfigError, match=r"preset 'a': its bases form a cycle \(a -> b -> a\)"):
        load_preset("a")
    with pytest.raises(ConfigError, match=r"preset 'c': its bases form a cycle \(c -> c\)"):
        load_preset("c")
    assert load_preset("d").epochs == 3  # a chain that ends is fine


@pytest.mark.parametrize("text,words", [(b"lr: 0.1\nepochs: 2\nlr: 0.3\n", "appears twice"),
                                        (b"2: x\n", "key 2 is not a setting's name"),
                                        (b"[1, 2]: x\n", "not valid YAML at line 1, column 1: found unhashable key")])
def test_config_files_with_odd_keys(tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=words) as e:
        load_file(path)
    assert str(path) in str(e.value)


def test_bounds_keep_the_usual_values():
    cfg = config.apply_overrides(load_preset("vgg3"), ["seed=2147483647", "lr=100", "widths=[4096,64,128]",
                                                       "dense=65536", "name=mein-lauf_ü", "reference={x: 0}"])
    assert cfg.seed == 2**31 - 1 and cfg.name == "mein-lauf_ü"


@pytest.mark.slow
def test_a_name_with_bytes_that_are_not_utf8_from_a_real_shell(tmp_path):
    """The bytes a Latin-1 terminal sends reach Python as lone surrogates; refused before the run folder."""
    env = {**os.environ, "PYTHONUTF8": "1"}
    r = subprocess.run([sys.executable, "-m", "cifarlab", "train", "--preset", "vgg3", b"name=caf\xe9",
                        "--out", "run"], cwd=tmp_path, capture_output=True, env=env, timeout=300)
    err = r.stderr.decode("utf-8", "replace").strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "not UTF-8 text" in err[0], err
    assert list(tmp_path.iterdir()) == []


FIXTURE_RUN = Path(__file__).parent / "fixtures" / "run_v0_interrupted"


@pytest.mark.parametrize("verb", [["predict", "{run}", str(FIXTURE_RUN / "curves.png")], ["evaluate", "{run}"],
                                  ["train", "--resume", "{run}"],
                                  ["export", "{run}", "--format", "safetensors", "--out", "{tmp}/e"]])
def test_a_checkpoint_whose_saved_config_is_invalid_is_named(tmp_path, capsys, verb):
    """A real checkpoint whose saved config was edited to lr=-1: every reader names the file."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE_RUN, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["config"]["lr"] = -1
    torch.save(state, run / "checkpoint.pt")
    before = _snapshot(tmp_path)
    line = _one_line_refusal([a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for a in verb], capsys)
    assert f"{run / 'checkpoint.pt'}: its saved config is not valid (lr=-1.0: must be" in line, line
    # --resume takes the run folder's lock (an empty .lock, as every resume does) before reading its checkpoint
    assert [f for f in _snapshot(tmp_path) if f != "run/.lock"] == before


def test_the_hint_after_ctrl_c_before_the_run_started_repeats_the_whole_command(tmp_path, capsys):
    """Stopped before config.yaml was written (while the data set downloads, say): nothing saved the
    preset and overrides, so the hint is the command as typed, not a --resume that has nothing to read."""
    typed = f"cifarlab train --preset vgg1 --out {tmp_path / 'run'} lr=0.02 epochs=3"
    args = argparse.Namespace(verb="train", run_dir=str(tmp_path / "run"), resume=None, command_line=typed)
    assert _interrupted(args) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"cifarlab train: interrupted; it stopped before the run started (nothing to resume): start " \
                  f"it again with `{typed}`"


@pytest.mark.slow
def test_ctrl_c_before_the_first_checkpoint_says_the_settings_are_kept(tmp_path, data_dir):
    """A real run stopped by SIGINT after its config.yaml and before its first checkpoint: the hint
    resumes it with the overrides it was given, and the resumed config has them."""
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "cifarlab", "train", "--preset", "vgg1", "--out", str(run),
                          "--data", str(data_dir), "--quiet", "epochs=2", "lr=0.02"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / "config.yaml").is_file():
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert not (run / "checkpoint.pt").exists()  # a whole epoch of 50,000 images did not fit in the wait
    assert err.strip().splitlines()[-1] == (f"cifarlab train: interrupted; it resumes with `cifarlab train "
                                            f"--resume {run}` (no checkpoint yet: from epoch 1, with the preset "
                                            f"and overrides saved in its config.yaml)")
    saved = load_file(run / "config.yaml")
    assert (saved.name, saved.epochs, saved.lr) == ("vgg1", 2, 0.02)
