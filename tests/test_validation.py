"""Settings and files that cannot work end in one clear line, before anything is created.

The command-line cases run `python -m cifarlab` (started all at once, as most fail
before loading any data); the wider table of settings runs in this process.
"""
import subprocess
import sys

import pytest

from cifarlab.config import ConfigError, apply_overrides, from_dict, load_file, load_preset, preset_names, to_dict
from cifarlab.study.jobs import QUICK_EPOCHS_SCALE, QUICK_OVERRIDES, Job, job_config

# (override, a word the error must name): each accepted silently before, or a crash after an epoch
BAD_OVERRIDES = [
    ("val_split=-100", "val_split"),
    ("subset=-10", "subset"),
    ("lr=nan", "lr"),
    ("momentum=5", "momentum"),
    ("label_smoothing=2", "label_smoothing"),
    ("blocks=0", "blocks"),
    ("device=tpu", "device"),
    ("warmup_epochs=-3", "warmup_epochs"),
    ("checkpoint_every=0", "checkpoint_every"),
    ("eval_batch_size=0", "eval_batch_size"),
]

MORE_BAD = [
    ("lr=-1", "lr"), ("lr=inf", "lr"), ("widths=[32,'x']", "widths[1]"), ("widths=[32,-5,128]", "widths[1]"),
    ("widths=[32,true,128]", "widths[1]"), ("dropout=1.5", "dropout"), ("dropout=[0.2,0.2,0.2,1]", "dropout[3]"),
    ("dropout=[0.2,0.3]", "dropout"), ("threads=-1", "threads"), ("blocks=6", "blocks"),
    ("blocks=4", "widths"), ("dense=0", "dense"), ("batch_size=0", "batch_size"), ("epochs=0", "epochs"),
    ("subset=60000", "subset"), ("subset=5", "subset"), ("val_split=15", "val_split"),
    ("subset=1000 val_split=1000", "val_split"), ("val_split=50000", "val_split"),
    ("subset=50 drop_last=true", "drop_last"), ("momentum=-0.1", "momentum"), ("momentum=1", "momentum"),
    ("label_smoothing=1", "label_smoothing"), ("betas=[0.9]", "betas"), ("betas=[0.9,1.5]", "betas[1]"),
    ("eps=0", "eps"), ("l2=-1", "l2"), ("weight_decay=nan", "weight_decay"), ("decay_epochs=-1", "decay_epochs"),
    ("min_lr_factor=2", "min_lr_factor"), ("onecycle_pct=0", "onecycle_pct"), ("restart_mult=0", "restart_mult"),
    ("restart_mult=0.5", "restart_mult"), ("restart_mult=0.999", "restart_mult"),
    ("nesterov=true momentum=0", "nesterov"), ("momentum=0.0 nesterov=true", "nesterov"),
    ("lookahead_decay=1.5", "lookahead_decay"), ("shift=1", "shift"), ("crop_pad=-1", "crop_pad"),
    ("crop_pad=40", "crop_pad"), ("seed=-1", "seed"), ("device=cuda:x", "device"), ("device=gpu", "device"),
    ("schedule=piecewise boundaries=[10,5] values=[0.1,0.01,0.001]", "boundaries"),
    ("schedule=piecewise boundaries=[10] values=[0.1,-1]", "values[1]"),
    ("whiten=false", "whiten"), ("bn_freeze_weight=false", "bn_freeze_weight"),
    ("whiten_bias_epochs=1", "whiten_bias_epochs"),
]

FAST94_BAD = [("dropout=0.2", "dropout"), ("batchnorm=true", "batchnorm"), ("blocks=2", "blocks"),
              ("dense=64", "dense"), ("bn_dropout_order=swapped", "bn_dropout_order"),
              ("widths=[64,256]", "widths"), ("whiten_bias_epochs=-1", "whiten_bias_epochs")]

# settings that must stay valid: the README's and the tests' own
GOOD = [
    ("vgg3", ["subset=1000", "val_split=200"]), ("vgg3", ["subset=500", "val_split=100", "epochs=1"]),
    ("vgg3", QUICK_OVERRIDES), ("vgg3", ["epochs=10", "lr=0.01"]), ("vgg3", ["device=cpu", "amp=off"]),
    ("vgg3", ["device=cuda:1"]), ("vgg3", ["dropout=[0.2,0.3,0.4,0.5]", "nesterov=true"]),
    ("vgg1", ["dropout=[0.2,0.5]"]), ("vgg3", ["threads=0"]), ("vgg3", ["momentum=0"]),
    ("fast94", ["val_split=5000", "test=false"]), ("fast94", ["lookahead_every=0", "tta=0"]),
    ("fast94", ["whiten=false", "bn_freeze_weight=false", "bias_lr_scale=1", "label_smoothing=0",
                "alt_flip=false", "crop_pad=0", "tta=1"]),
    ("fast94", ["subset=1200", "val_split=200", "epochs=3", "batch_size=100", "lr=0.15", "warmup_epochs=0.7"]),
    ("fast94", ["subset=600", "val_split=100", "epochs=2", "batch_size=100", "whiten_bias_epochs=1"]),
    ("fast94", ["val_split=5000", "epochs=4", "warmup_epochs=0.92", "whiten_bias_epochs=1", "test=false"]),
    ("fast_combined", ["epochs=30", "warmup_epochs=6"]), ("vgg3", ["model=fast94", "widths=[64,256,256]"]),
    ("cosine_restarts", ["restart_mult=1"]), ("cosine_restarts", ["restart_mult=1.5"]),
    ("vgg3", ["nesterov=true", "momentum=0.5"]), ("fast94", ["momentum=0.8"]),
]


def test_every_preset_validates_alone_and_in_a_quick_study():
    for name in preset_names():
        cfg = load_preset(name)
        assert from_dict(to_dict(cfg)) == cfg  # a run's config.yaml reads back as it was written
        job_config(Job(name, 1, tuple(QUICK_OVERRIDES), epochs_scale=QUICK_EPOCHS_SCALE))
        job_config(Job(name, 0, ("subset=1000", "val_split=200", "epochs=1")))


@pytest.mark.parametrize("preset,over", GOOD, ids=[f"{p}:{' '.join(o)}" for p, o in GOOD])
def test_usual_settings_stay_valid(preset, over):
    apply_overrides(load_preset(preset), over)


@pytest.mark.parametrize("over,word", BAD_OVERRIDES + MORE_BAD, ids=[o for o, _ in BAD_OVERRIDES + MORE_BAD])
def test_bad_settings_are_refused_naming_the_key(over, word):
    with pytest.raises(ConfigError) as e:
        apply_overrides(load_preset("vgg3"), over.split())
    assert word in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("over,word", FAST94_BAD, ids=[o for o, _ in FAST94_BAD])
def test_settings_of_the_other_network_are_refused(over, word):
    with pytest.raises(ConfigError) as e:
        apply_overrides(load_preset("fast94"), over.split())
    assert word in str(e.value)
    if word not in ("widths", "whiten_bias_epochs"):  # says where the key applies and what fast94 takes
        assert "applies to model=vgg only" in str(e.value) and "whiten" in str(e.value)


def test_a_study_job_is_validated_too():
    with pytest.raises(ConfigError, match="lr"):
        job_config(Job("vgg3", 0, ("lr=nan",)))


# --- config files -----------------------------------------------------------------------

BAD_FILES = {
    "syntax.yaml": (b"lr: [0.1\nepochs: 2\n", "not valid YAML at line"),
    "list.yaml": (b"- lr: 0.1\n- epochs: 2\n", "holds a list"),
    "scalar.yaml": (b"just some words\n", "holds a str"),
    "latin1.yaml": ("description: caf\u00e9\n".encode("latin-1"), "not UTF-8"),
    "badvalue.yaml": (b"base: vgg3\nwidths: [32, x]\n", "widths[1]"),
    "badbase.yaml": (b"base: [vgg3]\n", "must be a preset name"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_config_files_are_one_line_errors(tmp_path, name):
    data, words = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ConfigError) as e:
        load_file(path)
    assert words in str(e.value) and str(path) in str(e.value)


# --- the command line: one line, exit status 2, nothing created ------------------------------

@pytest.mark.parametrize("over,word", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_train_refuses_bad_settings_in_one_line(tmp_path, capsys, over, word):
    from cifarlab.cli import main
    out = tmp_path / "run"
    assert main(["train", "--preset", "vgg3", over, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cifarlab train: error: ") and word in err[0]
    assert not out.exists()


# a few of each kind as real commands (each starts Python and torch: about 3 s)
CLI_OVERRIDES = ["val_split=-100", "lr=nan", "device=tpu", "checkpoint_every=0"]


def _cli_cases(tmp):
    cases = {o: ["train", "--preset", "vgg3", o] for o in CLI_OVERRIDES}
    cases["fast94 dropout"] = ["train", "--preset", "fast94", "dropout=0.2"]
    for name, (data, _) in BAD_FILES.items():
        if name in ("syntax.yaml", "list.yaml", "latin1.yaml"):
            (tmp / name).write_bytes(data)
            cases[name] = ["train", "--config", str(tmp / name)]
    cases["study lr=nan"] = ["study", "--only", "vgg1", "lr=nan"]
    return cases


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    import matplotlib.font_manager  # noqa: F401  # builds the session's font cache once, not in every command
    procs = {}
    for i, (name, args) in enumerate(_cli_cases(tmp).items()):
        out = tmp / f"out{i}"
        flag = "--out" if args[0] in ("train", "study") else None
        procs[name] = (out, subprocess.Popen([sys.executable, "-m", "cifarlab", *args, flag, str(out)],
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                             cwd=tmp))
    results = {}
    for name, (out, p) in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        results[name] = (p.returncode, stdout, stderr, out, tmp)
    return results


WORDS = {**{o: w for o, w in BAD_OVERRIDES if o in CLI_OVERRIDES}, "fast94 dropout": "dropout",
         "syntax.yaml": "not valid YAML", "list.yaml": "holds a list", "latin1.yaml": "not UTF-8",
         "study lr=nan": "lr"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(WORDS))
def test_cli_refuses_in_one_line_and_creates_nothing(cli_results, name):
    rc, stdout, stderr, out, cwd = cli_results[name]
    assert rc == 2, stderr
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("Matplotlib is building")]
    assert len(lines) == 1 and lines[0].startswith("cifarlab ") and ": error: " in lines[0], stderr
    assert WORDS[name] in lines[0]
    assert not out.exists() and not (cwd / "runs").exists() and not (cwd / "studies").exists()
