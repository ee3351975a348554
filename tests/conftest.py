"""Shared fixtures: the real CIFAR-10 copy beside the project, loaded once per session."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def data_path() -> Path:
    env = os.environ.get("CIFARLAB_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "data" / "cifar-10-batches-bin"
    if not path.exists():
        pytest.exit(f"CIFAR-10 not found at {path}: set CIFARLAB_DATA to the cifar-10-batches-bin folder",
                    returncode=4)
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return data_path()


@pytest.fixture(scope="session")
def cifar(data_dir):
    from cifarlab.data import load_cifar10
    return load_cifar10(data_dir, download_ok=False)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory, data_dir):
    """The session (and the commands it starts) gets its own cache folder; data from CIFARLAB_DATA."""
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "CIFARLAB_DATA")}
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.getbasetemp() / "cache")
    os.environ["CIFARLAB_DATA"] = str(data_dir)
    # commands started by tests (python -m cifarlab ...) import this tree too
    saved["PYTHONPATH"] = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), saved["PYTHONPATH"]]))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
