import subprocess
import sys

import pytest

from cifarlab.config import ConfigError, apply_overrides, load_file, load_preset, preset_names


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        apply_overrides(load_preset("vgg3"), ["learning_rate=0.1"])
    msg = str(e.value)
    assert "learning_rate" in msg and "Valid keys:" in msg and "lr" in msg and "batch_size" in msg


def test_bad_choice_lists_options():
    with pytest.raises(ConfigError, match="sgd, adam, adamw"):
        apply_overrides(load_preset("vgg3"), ["optimizer=rmsprop"])


def test_overrides_are_type_checked_and_coerced():
    cfg = apply_overrides(load_preset("vgg3"), ["lr=1e-2", "epochs=3", "dropout=[0.2,0.3,0.4,0.5]",
                                                "nesterov=true"])
    assert cfg.lr == 0.01 and cfg.epochs == 3 and cfg.dropout == [0.2, 0.3, 0.4, 0.5] and cfg.nesterov is True
    with pytest.raises(ConfigError, match="epochs='ten': expected int"):
        apply_overrides(cfg, ["epochs=ten"])
    # text fields take the text as typed (YAML alone would read "off" as false)
    assert apply_overrides(cfg, ["amp=off", "device=cpu"]).amp == "off"
    with pytest.raises(ConfigError, match="amp='no'.*auto, native, off, bf16, fp16"):
        apply_overrides(cfg, ["amp=no"])
    with pytest.raises(ConfigError, match="not key=value"):
        apply_overrides(cfg, ["epochs"])


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="vgg3"):
        load_preset("vgg99")
    assert "vgg3" in preset_names()


@pytest.mark.slow
def test_cli_reports_config_errors_without_traceback():
    r = subprocess.run([sys.executable, "-m", "cifarlab", "train", "--preset", "vgg3", "bogus=1"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "unknown config key: bogus" in r.stderr and "Valid keys:" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_cli_reports_missing_data_without_traceback(tmp_path):
    import os
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), CIFARLAB_DATA=str(tmp_path / "none"),
               CIFARLAB_URL="http://127.0.0.1:9/cifar-10-binary.tar.gz")
    r = subprocess.run([sys.executable, "-m", "cifarlab", "train", "--preset", "vgg3", "epochs=1"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stderr
    assert "CIFAR-10 not found" in r.stderr and str(tmp_path / "none") in r.stderr
    assert "Traceback" not in r.stderr


def test_one_study_order():
    from cifarlab import config
    from cifarlab.study import jobs
    assert jobs.ordered_presets()[:len(config.STUDY_ORDER)] == config.STUDY_ORDER
    assert set(config.STUDY_ORDER) <= set(config.preset_names())
    assert config.study_order(["fast94", "combined", "vgg1", "combined"]) == ["vgg1", "combined", "fast94"]


def test_numbers_written_as_text_inside_lists_are_numbers(tmp_path):
    # YAML 1.1 reads 1e-2 (no dot) as text, inside a list as on its own
    cfg = apply_overrides(load_preset("step_decay"), ["values=[1e-1,1e-2,1e-3,1e-4]", "boundaries=[1e3,2e3,5e3]",
                                                      "betas=[9e-1,0.999]", "dropout=[2e-1,0.3,0.4,5e-1]",
                                                      "lr=1e-2"])
    assert cfg.values == [0.1, 0.01, 0.001, 0.0001] and all(type(v) is float for v in cfg.values)
    assert cfg.boundaries == [1000, 2000, 5000] and cfg.betas == [0.9, 0.999] and cfg.dropout == [0.2, 0.3, 0.4, 0.5]
    from cifarlab.optim import build_schedule
    lr = build_schedule(cfg, steps_per_epoch=100)
    assert (lr(0), lr(1001), lr(2001), lr(6000)) == (0.1, 0.01, 0.001, 0.0001)
    # the same in a config file, and in tune's choice of lists
    (tmp_path / "c.yaml").write_text("base: step_decay\nvalues: [1e-1, 1e-2, 1e-3, 1e-4]\n")
    assert load_file(tmp_path / "c.yaml").values == [0.1, 0.01, 0.001, 0.0001]
    from cifarlab.study.tune import parse_param
    assert parse_param("values=choice([1e-1,1e-2,1e-3,1e-4],[3e-1,3e-2,3e-3,3e-4])")[2] == \
        [[0.1, 0.01, 0.001, 0.0001], [0.3, 0.03, 0.003, 0.0003]]
    # text that is no number is still refused, by position
    with pytest.raises(ConfigError, match=r"values\[1\]='x'"):
        apply_overrides(cfg, ["values=[1e-1,x,1e-3,1e-4]"])
    with pytest.raises(ConfigError, match=r"values\[3\]=nan: must be a finite number"):
        apply_overrides(cfg, ["values=[1e-1,1e-2,1e-3,nan]"])
    with pytest.raises(ConfigError, match=r"betas\[1\]=2.0"):
        apply_overrides(cfg, ["betas=[0.9,2e0]"])
