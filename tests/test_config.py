import subprocess
import sys

import pytest

from cifarlab.config import ConfigError, apply_overrides, load_preset, preset_names


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


def test_cli_reports_config_errors_without_traceback():
    r = subprocess.run([sys.executable, "-m", "cifarlab", "train", "--preset", "vgg3", "bogus=1"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "unknown config key: bogus" in r.stderr and "Valid keys:" in r.stderr
    assert "Traceback" not in r.stderr


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
