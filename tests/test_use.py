"""Using a trained model on real CIFAR-10: predict image files, evaluate, export, reload."""
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cifarlab
from cifarlab import checkpoint, cli as cifarlab_cli
from cifarlab.config import apply_overrides, load_preset
from cifarlab.data import CLASSES
from cifarlab.inference.export import ATOL, RTOL, ExportError, export_run
from cifarlab.inference.predict import ImageError, ModelError, load_image
from cifarlab.train import train

N_FILES = 200  # test images written as files: even ones PNG, odd ones JPEG


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cifarlab", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small real run (about 40% test accuracy; chance is 10%), shared by the module."""
    cfg = apply_overrides(load_preset("vgg3"), ["subset=4000", "epochs=3", "lr=0.01"])
    out = tmp_path_factory.mktemp("use") / "run"
    train(cfg, out, progress=False, log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def model(run):
    return cifarlab.load(run)


@pytest.fixture(scope="module")
def files(cifar, tmp_path_factory):
    """The first N_FILES test images on disk, with their labels."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(N_FILES):
        img = Image.fromarray(cifar.x_test[i].transpose(1, 2, 0))
        if i % 2 == 0:
            paths.append(folder / f"test{i:03d}.png")
            img.save(paths[-1])
        else:
            paths.append(folder / f"test{i:03d}.jpg")
            img.save(paths[-1], quality=95)
    return paths, cifar.y_test[:N_FILES]


@pytest.mark.slow
def test_png_and_jpeg_files_predicted_well_above_chance(model, files):
    paths, labels = files
    preds = model.predict(paths, top=3)
    assert [p.source for p in preds] == [str(p) for p in paths]
    acc = np.mean([p.label == CLASSES[y] for p, y in zip(preds, labels)])
    assert acc > 0.25, acc  # chance is 0.10 over 200 images
    for p in preds:
        assert len(p.top) == 3 and p.top[0][1] >= p.top[1][1] >= p.top[2][1]
        assert p.probs.sum() == pytest.approx(1, abs=1e-5)


@pytest.mark.slow
def test_png_files_predict_as_the_arrays_they_hold(model, files, cifar):
    paths, _ = files
    png = [p for p in paths if p.suffix == ".png"]
    idx = [int(p.stem[4:]) for p in png]
    from_files = model.probs(png)
    np.testing.assert_allclose(from_files, model.probs(cifar.x_test[idx]), atol=1e-6)  # (N, 3, 32, 32)
    np.testing.assert_allclose(from_files, model.probs(cifar.x_test[idx].transpose(0, 2, 3, 1)), atol=1e-6)


def test_any_size_is_resized_with_nearest_as_keras_load_img(cifar, tmp_path):
    original = cifar.x_test[7].transpose(1, 2, 0)
    # Upscaled k times by nearest neighbour, PIL's NEAREST downscale picks source pixel
    # floor((i + 0.5) * k), which falls back inside block i: the original comes back exactly.
    for w, h in [(64, 64), (96, 64), (160, 96)]:
        path = tmp_path / f"big{w}x{h}.png"
        Image.fromarray(original).resize((w, h), Image.NEAREST).save(path)
        assert (load_image(path) == original).all(), (w, h)
    rgba = np.dstack([original, np.full((32, 32), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    assert (load_image(tmp_path / "alpha.png") == original).all()  # alpha dropped, as Keras does
    Image.fromarray(original).convert("L").save(tmp_path / "grey.png")
    grey = load_image(tmp_path / "grey.png")
    assert grey.shape == (32, 32, 3) and (grey[..., 0] == grey[..., 2]).all()


def _bad_files(files, tmp_path):
    jpg = next(p for p in files[0] if p.suffix == ".jpg")
    big = tmp_path / "photo.jpg"
    Image.open(jpg).resize((200, 150), Image.BICUBIC).save(big, quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    text = tmp_path / "notes.png"
    text.write_text("this is a text file, not a picture\n")
    return big, truncated, text, tmp_path / "missing.png"


@pytest.mark.slow
def test_predict_cli_reports_bad_files_and_predicts_the_rest(run, files, tmp_path):
    good = files[0][0]
    big, truncated, text, missing = _bad_files(files, tmp_path)
    r = cli("predict", run, good, truncated, text, big, missing, "--json", "-k", "2")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert [p["file"] for p in out["predictions"]] == [str(good), str(big)]
    for p in out["predictions"]:
        assert len(p["top"]) == 2 and all(t["class"] in CLASSES for t in p["top"])
        assert 1 >= p["top"][0]["prob"] >= p["top"][1]["prob"] > 0
    errors = {e["file"]: e["error"] for e in out["errors"]}
    assert set(errors) == {str(truncated), str(text), str(missing)}
    assert "truncated" in errors[str(truncated)] and "not an image" in errors[str(text)]
    assert "no such file" in errors[str(missing)]
    for f in (truncated, text, missing):
        assert f"error: {f}:" in r.stderr
    assert "Traceback" not in r.stderr

    r = cli("predict", run, good, big)  # text output, nothing failing
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(good)) and lines[0].split()[1] in CLASSES


@pytest.mark.slow
def test_api_names_the_bad_file(model, files, tmp_path):
    _, truncated, text, _ = _bad_files(files, tmp_path)
    for bad in (truncated, text):
        with pytest.raises(ImageError, match=str(bad)):
            model.predict([files[0][0], bad])


def test_load_gives_a_classifier_the_package_names():
    # cifarlab.Classifier, not the network's models.base.Model: one name for each
    run = Path(__file__).parent / "fixtures" / "run_v0_interrupted"
    m = cifarlab.load(run, "cpu")
    assert type(m) is cifarlab.Classifier and "Classifier" in dir(cifarlab) and "Model" not in dir(cifarlab)
    assert repr(m) == f"cifarlab.Classifier('vgg1' from {run / 'checkpoint.pt'}, torch, cpu)"
    with pytest.raises(AttributeError, match="no attribute 'Model'"):
        cifarlab.Model  # noqa: B018 (the access is the test)


@pytest.mark.slow
def test_evaluate_writes_its_files_and_matches_the_run(run):
    r = cli("evaluate", run)
    assert r.returncode == 0, r.stderr
    result = json.loads((run / "evaluation.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    # Same model, same images, no TTA: the same number right (summary.json rounds it to float32).
    assert round(result["test_acc"] * 10_000) == round(summary["test_acc"] * 10_000)
    assert result["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    m = np.array(result["confusion"])
    assert m.shape == (10, 10) and m.sum() == 10_000 and m.sum(1).tolist() == [1000] * 10
    assert np.trace(m) / 10_000 == pytest.approx(result["test_acc"])
    assert np.mean(list(result["per_class_acc"].values())) == pytest.approx(result["test_acc"])
    assert (run / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"test accuracy {summary['test_acc']:.4f}" in r.stdout

    r = cli("evaluate", run, "--tta")
    assert r.returncode == 0, r.stderr
    tta = json.loads((run / "evaluation_tta.json").read_text())
    assert tta["tta"] == 1 and tta["test_acc"] > 0.25 and tta["test_acc"] != result["test_acc"]
    assert (run / "confusion_tta.png").is_file()
    assert json.loads((run / "evaluation.json").read_text()) == result  # the plain results are kept


@pytest.mark.slow
def test_evaluate_measures_a_run_trained_without_the_test_set(tmp_path):
    # test=false: summary.json has no test accuracy; evaluate measures one and says so
    run = tmp_path / "run"
    cfg = apply_overrides(load_preset("vgg1"), ["subset=300", "val_split=100", "epochs=1", "test=false"])
    train(cfg, run, progress=False, log=lambda *a: None)
    assert json.loads((run / "summary.json").read_text())["test_acc"] is None
    r = cli("evaluate", run)
    assert r.returncode == 0, r.stderr
    result = json.loads((run / "evaluation.json").read_text())
    assert result["images"] == 10_000 and 0 <= result["test_acc"] <= 1
    assert f"test accuracy {result['test_acc']:.4f}  test loss {result['test_loss']:.4f}" in r.stdout
    assert "(summary.json has none: the run was trained with test=false)" in r.stdout
    assert (run / "confusion.png").is_file()


@pytest.mark.slow
def test_onnx_export_agrees_with_pytorch(run, model, cifar, tmp_path):
    import onnx
    import onnxruntime as ort
    from cifarlab.augment import normalize
    out = export_run(run, "onnx", tmp_path / "exp")
    assert out["check"]["within_tolerance"] and out["check"]["images"] == 1000
    # Test images the export's own check did not use, straight through onnxruntime.
    x = torch.from_numpy(cifar.x_test[5000:5500])
    session = ort.InferenceSession(out["path"], providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": normalize(x, model.mean, model.std).numpy()})[0]
    want = model.logits(x).numpy()
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.99  # equal but for near-ties
    meta = {p.key: p.value for p in onnx.load(out["path"]).metadata_props}
    assert json.loads(meta["cifarlab"])["classes"] == list(CLASSES)
    onnx_model = cifarlab.load(tmp_path / "exp" / "model.onnx")
    assert onnx_model.backend == "onnx"
    np.testing.assert_allclose(onnx_model.probs(cifar.x_test[:50]), model.probs(cifar.x_test[:50]), atol=1e-5)


@pytest.mark.slow
def test_safetensors_export_reloads_without_the_run_folder(run, model, files, tmp_path):
    export_run(run, "safetensors", tmp_path / "exp")
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "exp", moved)  # nothing points back at the run folder
    meta = json.loads((moved / "model.json").read_text())
    assert meta["norm"] == model.norm and meta["classes"] == list(CLASSES)
    back = cifarlab.load(moved)
    assert str(back.source).endswith("model.safetensors") and back.backend == "torch"
    np.testing.assert_array_equal(back.probs(files[0]), model.probs(files[0]))
    with pytest.raises(ModelError, match="model.json"):
        (moved / "model.json").unlink()
        cifarlab.load(moved / "model.safetensors")


@pytest.mark.slow
def test_a_gpu_run_predicts_on_a_machine_without_one(run, files, tmp_path):
    """A checkpoint written by a CUDA run (config device=cuda, bf16, compiled) loads and
    predicts with CUDA hidden; device=auto then picks the CPU. (Tensors saved from a real
    GPU cannot be made without one; checkpoint.load maps any device to the CPU.)"""
    state = checkpoint.load(run / "checkpoint.pt")
    state["config"].update(device="cuda", amp="bf16", compile=True)
    gpu = tmp_path / "gpu-run"
    checkpoint.save(gpu / "checkpoint.pt", state)
    paths = [str(p) for p in files[0][:20]]
    code = ("import sys, torch, cifarlab; m = cifarlab.load(sys.argv[1]); "
            "print(torch.cuda.is_available(), m.device, m.probs(sys.argv[2:]).argmax(1).tolist())")
    import os
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-c", code, str(gpu), *paths], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    cuda, device, labels = r.stdout.split(" ", 2)
    assert (cuda, device) == ("False", "cpu")
    assert json.loads(labels) == cifarlab.load(run, "cpu").probs(paths).argmax(1).tolist()  # CPU both sides


@pytest.mark.slow
def test_clear_errors_for_what_is_not_a_model(tmp_path, run, files):
    with pytest.raises(ModelError, match="neither a run folder"):
        cifarlab.load(tmp_path)
    with pytest.raises(ModelError, match="no such run folder"):
        cifarlab.load(tmp_path / "nothing")
    r = cli("predict", tmp_path, files[0][0])
    assert r.returncode == 2 and "neither a run folder" in r.stderr and "Traceback" not in r.stderr
    r = cli("evaluate", tmp_path)
    assert r.returncode == 2 and "checkpoint.pt" in r.stderr
    with pytest.raises(ImageError, match=r"\(N, 32, 32, 3\)"):
        cifarlab.load(run).probs(np.zeros((2, 64, 64, 3), np.uint8))


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export(capsys, run, fmt, out) -> str:
    """`cifarlab export` in this process; its stdout."""
    assert cifarlab_cli.main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    return capsys.readouterr().out


def _logits(model_or_path, cifar):
    m = cifarlab.load(model_or_path, "cpu") if not hasattr(model_or_path, "logits") else model_or_path
    return m.logits(torch.from_numpy(cifar.x_test[:200]))


@pytest.mark.slow
def test_an_export_records_its_weights_sha256_and_keeps_the_other_format_only_if_the_same(two_runs, cifar,
                                                                                         tmp_path, capsys):
    """model.json lists every weights file it describes with its SHA-256. Exporting the same run in
    the other format keeps the first file (the same tensors); exporting another run's weights
    into the folder removes the file of the other format, and the command says so."""
    first, second = two_runs
    exp = tmp_path / "exp"
    out = _export(capsys, first, "safetensors", exp)
    meta = json.loads((exp / "model.json").read_text())
    assert meta["files"] == {"model.safetensors": {"sha256": _sha256(exp / "model.safetensors"),
                                                   "bytes": (exp / "model.safetensors").stat().st_size}}
    assert "removed" not in out and "kept" not in out
    out = _export(capsys, first, "onnx", exp)
    meta = json.loads((exp / "model.json").read_text())
    assert {n: e["sha256"] for n, e in meta["files"].items()} == {
        "model.onnx": _sha256(exp / "model.onnx"), "model.safetensors": _sha256(exp / "model.safetensors")}
    assert f"kept {exp / 'model.safetensors'}: the same weights" in out, out
    torch.testing.assert_close(_logits(exp / "model.onnx", cifar), _logits(exp / "model.safetensors", cifar),
                               atol=1e-4, rtol=1e-4)

    # the second run (other weights) as ONNX: the first run's safetensors must go
    out = _export(capsys, second, "onnx", exp)
    assert f"removed {exp / 'model.safetensors'}: an earlier export's other weights" in out, out
    assert sorted(p.name for p in exp.iterdir()) == ["model.json", "model.onnx"]
    meta = json.loads((exp / "model.json").read_text())
    assert list(meta["files"]) == ["model.onnx"]
    assert meta["files"]["model.onnx"]["sha256"] == _sha256(exp / "model.onnx")
    want = _logits(cifarlab.load(second, "cpu"), cifar)
    torch.testing.assert_close(_logits(exp, cifar), want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(_logits(cifarlab.load(first, "cpu"), cifar), want, atol=1e-3)  # other weights indeed

    # and back to safetensors: the second run's ONNX holds the same tensors, so it stays
    out = _export(capsys, second, "safetensors", exp)
    assert f"kept {exp / 'model.onnx'}" in out and "removed" not in out, out
    assert sorted(json.loads((exp / "model.json").read_text())["files"]) == ["model.onnx", "model.safetensors"]


@pytest.mark.slow
def test_loading_an_export_checks_the_sha256_of_its_weights(two_runs, cifar, files, tmp_path, capsys):
    first, second = two_runs
    a, b = tmp_path / "a", tmp_path / "b"
    export_run(first, "safetensors", a)
    export_run(second, "safetensors", b)
    export_run(second, "onnx", tmp_path / "b-onnx")
    # weights of another export copied over these: loadable, but not the ones model.json describes
    shutil.copy(b / "model.safetensors", a / "model.safetensors")
    for where in (a, a / "model.safetensors"):
        with pytest.raises(ModelError) as e:
            cifarlab.load(where, "cpu")
        msg = str(e.value)
        assert str(a / "model.safetensors") in msg and f"its SHA-256 is {_sha256(b / 'model.safetensors')}" in msg
        assert "not the weights exported with it" in msg and "cifarlab export" in msg and "\n" not in msg, msg
    assert cifarlab_cli.main(["predict", str(a), str(files[0][0])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SHA-256" in err, err
    # a truncated ONNX file: named by its SHA-256 before onnxruntime reads it
    onnx_file = tmp_path / "b-onnx" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-100])
    with pytest.raises(ModelError, match="its SHA-256 is"):
        cifarlab.load(tmp_path / "b-onnx", "cpu")
    # a weights file model.json does not list is never what the folder loads, and alone it is refused
    export_run(second, "onnx", tmp_path / "c")
    shutil.copy(a / "model.safetensors", tmp_path / "c" / "model.safetensors")  # a stray file
    torch.testing.assert_close(_logits(tmp_path / "c", cifar), _logits(cifarlab.load(second, "cpu"), cifar),
                               atol=1e-4, rtol=1e-4)
    assert cifarlab.load(tmp_path / "c", "cpu").backend == "onnx"
    with pytest.raises(ModelError, match=r"not the weights model.json beside it describes \(it lists model.onnx\)"):
        cifarlab.load(tmp_path / "c" / "model.safetensors", "cpu")


def test_an_export_without_onnxscript_says_so_and_writes_nothing(two_runs, tmp_path, capsys, monkeypatch):
    """torch.onnx.export(dynamo=True) needs onnxscript: without it the export stops before any
    work, names it, and leaves the folder (and an earlier export in it) as it was."""
    first, second = two_runs
    exp = tmp_path / "exp"
    export_run(first, "safetensors", exp)
    before = {p.name: p.read_bytes() for p in exp.iterdir()}
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` raises ImportError
    for out in (exp, tmp_path / "fresh"):
        with pytest.raises(ExportError) as e:
            export_run(second, "onnx", out)
        msg = str(e.value)
        assert "onnx export needs onnx, onnxscript, onnxruntime; missing: onnxscript" in msg, msg
        assert "pip install 'cifarlab[export]'" in msg
    assert {p.name: p.read_bytes() for p in exp.iterdir()} == before
    assert not (tmp_path / "fresh").exists()
    rc = cifarlab_cli.main(["export", str(second), "--format", "onnx", "--out", str(exp)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "missing: onnxscript" in err, err
    assert cifarlab.load(exp, "cpu").info["epoch"] == 1  # still the first run's export, whole


@pytest.mark.slow
def test_test_time_augmentation_is_one_level_everywhere(tmp_path, capsys):
    """tta is a level (0, 1, 2) in training, evaluation and prediction alike: `evaluate --tta` on a run
    trained and tested with tta=2 measures level 2 (the run's own, so its summary's accuracy again), and
    --tta-level 1 the mirror alone, each into its own files; the Python API takes the same levels."""
    from cifarlab.cli import main
    from cifarlab.config import apply_overrides, load_preset
    from cifarlab.inference.predict import ModelError, load
    from cifarlab.train import train
    run = tmp_path / "run"
    cfg = apply_overrides(load_preset("vgg1"), ["widths=[8]", "dense=16", "subset=1000", "epochs=1", "tta=2"])
    summary = train(cfg, run, progress=False, log=lambda *a: None)
    assert main(["evaluate", str(run), "--tta"]) == 0
    out = capsys.readouterr().out
    two = json.loads((run / "evaluation_tta2.json").read_text())
    assert two["tta"] == 2 and "TTA level 2" in out
    assert two["test_acc"] == pytest.approx(summary["test_acc"], abs=3e-4)  # measured as the run measured it
    assert f"(summary.json: {summary['test_acc']:.4f})" in out
    assert main(["evaluate", str(run), "--tta-level", "1"]) == 0
    one = json.loads((run / "evaluation_tta.json").read_text())
    assert one["tta"] == 1 and "summary.json" not in capsys.readouterr().out  # another level: not compared
    model = load(run)
    assert model.evaluate(tta=2)["test_acc"] == two["test_acc"] and model.evaluate(tta=True)["tta"] == 1
    with pytest.raises(ModelError, match="tta=3: a level"):
        model.logits(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), tta=3)
