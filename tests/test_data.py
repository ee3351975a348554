import fcntl
import http.server
import os
import pickle
import shutil
import socketserver
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest

from cifarlab import data as D


def test_files_match_official_md5s(data_dir):
    for name, want in D.BIN_MD5.items():
        assert D.md5sum(data_dir / name) == want, name


def test_known_facts(cifar):
    assert cifar.x_train.shape == (50000, 3, 32, 32) and cifar.x_train.dtype == np.uint8
    assert cifar.x_test.shape == (10000, 3, 32, 32)
    assert np.bincount(cifar.y_train).tolist() == [5000] * 10
    assert np.bincount(cifar.y_test).tolist() == [1000] * 10
    assert cifar.y_train[:5].tolist() == [6, 9, 9, 4, 1]
    assert cifar.y_test[:5].tolist() == [3, 8, 8, 0, 6]
    # first pixels, (R, G, B), row-major
    assert cifar.x_train[0, :, 0, :3].T.tolist() == [[59, 62, 63], [43, 46, 45], [50, 48, 43]]
    assert cifar.x_test[0, :, 0, :2].T.tolist() == [[158, 112, 49], [159, 111, 47]]
    mean = cifar.x_train.mean(axis=(0, 2, 3), dtype=np.float64)
    std = cifar.x_train.transpose(1, 0, 2, 3).reshape(3, -1).std(1, dtype=np.float64)
    np.testing.assert_allclose(mean, D.TRAIN_MEAN, atol=1e-3)
    np.testing.assert_allclose(std, D.TRAIN_STD, atol=1e-3)


def _copy(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        shutil.copy(p, dst / p.name)
    return dst


def test_corrupt_file_is_named(data_dir, tmp_path):
    bad = _copy(data_dir, tmp_path / "cifar-10-batches-bin")
    target = bad / "data_batch_3.bin"
    raw = bytearray(target.read_bytes())
    raw[12345] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(D.DataError, match=r"data_batch_3\.bin.*(MD5|md5)") as e:
        D.load_cifar10(tmp_path, download_ok=False)
    assert "fresh copy" in str(e.value)


def test_missing_file_is_named(data_dir, tmp_path):
    bad = _copy(data_dir, tmp_path / "cifar-10-batches-bin")
    (bad / "test_batch.bin").unlink()
    with pytest.raises(D.DataError, match=r"missing: .*test_batch\.bin"):
        D.load_cifar10(tmp_path, download_ok=False)


def _write_python_version(cifar, folder):
    folder.mkdir()
    md5s = {}
    chunks = [(f"data_batch_{i + 1}", cifar.x_train[i * 10000:(i + 1) * 10000],
               cifar.y_train[i * 10000:(i + 1) * 10000]) for i in range(5)]
    chunks.append(("test_batch", cifar.x_test, cifar.y_test))
    for name, x, y in chunks:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": x.reshape(len(x), -1), b"labels": y.tolist()}, f)
        md5s[name] = D.md5sum(folder / name)
    return md5s


def test_python_version_loads_to_same_arrays(cifar, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    md5s = _write_python_version(cifar, folder)
    # Our pickles are not the official files: the official MD5 check refuses them ...
    with pytest.raises(D.DataError, match="data_batch_1"):
        D.read_py_folder(folder)
    # ... and with their own MD5s they decode to exactly the binary version's arrays.
    ds = D.read_py_folder(folder, md5s)
    for k in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(ds, k), getattr(cifar, k))


def test_second_load_comes_from_array_cache(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a = D.load_cifar10(data_dir, download_ok=False)
    cached = list((tmp_path / "cifarlab" / "arrays").glob("*.npz"))
    assert len(cached) == 1
    b = D.load_cifar10(data_dir, download_ok=False)
    np.testing.assert_array_equal(a.x_train, b.x_train)


@pytest.fixture(scope="module")
def made_archive(data_dir, tmp_path_factory):
    """A binary-version archive made from the real files (not the official archive's bytes, so
    not its MD5: tests that load it as the official one give its own)."""
    path = tmp_path_factory.mktemp("archive") / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for p in sorted(data_dir.iterdir()):
            tar.add(p, arcname=f"cifar-10-batches-bin/{p.name}")
    return path, D.md5sum(path)


@pytest.fixture
def served(made_archive, tmp_path):
    """The made archive, served over loopback HTTP; the list of paths requested comes third."""
    root = tmp_path / "www"
    root.mkdir()
    os.link(made_archive[0], root / "cifar-10-binary.tar.gz")
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/cifar-10-binary.tar.gz", root / "cifar-10-binary.tar.gz", requests
    server.shutdown()


def test_download_checks_md5_and_extracts(served, tmp_path):
    url, archive, _ = served
    md5 = D.md5sum(archive)
    dest = tmp_path / "dl" / "cifar-10-binary.tar.gz"
    with pytest.raises(D.DataError, match="MD5"):
        D.download(url, dest, "0" * 32, progress=False)
    assert not dest.exists() and not list(dest.parent.glob("*.part"))
    D.download(url, dest, md5, progress=False)
    assert D.md5sum(dest) == md5
    folder = D._extract(dest, dest.parent)
    assert D.read_bin_folder(folder).y_train[:5].tolist() == [6, 9, 9, 4, 1]
    assert not list(dest.parent.glob(".extract*"))


def test_not_found_without_network_lists_places(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CIFARLAB_DATA")
    with pytest.raises(D.DataError) as e:
        D.load_cifar10(tmp_path / "nowhere", url="http://127.0.0.1:9/cifar-10-binary.tar.gz")
    msg = str(e.value)
    assert "could not download" in msg and str(tmp_path / "nowhere") in msg and "--data" in msg
    assert not list((tmp_path / "cache").rglob("*.part"))


def _as_official(monkeypatch, made_archive):
    """Load the made archive as cifar-10-binary.tar.gz: its MD5 stands for the official one."""
    monkeypatch.setitem(D.ARCHIVES, "cifar-10-binary.tar.gz", (made_archive[1], D.BIN_DIR))


def test_an_archive_is_unpacked_once_then_its_folder_reused(made_archive, tmp_path, monkeypatch, capsys):
    """--data ARCHIVE: unpacked beside it the first time; later loads reuse that folder while its
    files match their MD5s, and a damaged one is unpacked again, saying so."""
    _as_official(monkeypatch, made_archive)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    os.link(made_archive[0], archive)
    folder = tmp_path / D.BIN_DIR
    assert D.load_cifar10(archive, download_ok=False).y_train[:5].tolist() == [6, 9, 9, 4, 1]
    first = folder.stat().st_ino, (folder / "test_batch.bin").stat().st_ino
    ds = D.load_cifar10(archive, download_ok=False)
    assert ds.source == str(folder) and ds.y_test[:5].tolist() == [3, 8, 8, 0, 6]
    assert (folder.stat().st_ino, (folder / "test_batch.bin").stat().st_ino) == first  # not unpacked again
    assert capsys.readouterr().err == ""

    target = folder / "data_batch_2.bin"
    raw = bytearray(target.read_bytes())
    raw[777] ^= 0xFF
    target.write_bytes(bytes(raw))
    ds = D.load_cifar10(archive, download_ok=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{folder} is damaged" in err and "data_batch_2.bin" in err, err
    assert f"unpacking {archive} again" in err
    assert D.verify(folder, D.BIN_MD5) and ds.y_train[:5].tolist() == [6, 9, 9, 4, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cifar-10-batches-bin.lock", D.BIN_DIR, archive.name]


# A worker: loads CIFAR-10 (the made archive standing for the official one) and prints its source.
_WORKER = """
import sys
from cifarlab import data as D
D.ARCHIVES["cifar-10-binary.tar.gz"] = (sys.argv[1], D.BIN_DIR)
ds = D.load_cifar10(sys.argv[2], url=sys.argv[3])
print(ds.source, ds.y_train[:5].tolist())
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["archive-as-data", "download-into-cache"])
def test_a_second_worker_waits_for_the_unpacking_and_reuses_its_folder(where, made_archive, served, tmp_path):
    """A worker that finds the folder's lock held (another worker unpacking the archive, or
    downloading and unpacking it into the cache) waits, saying so, and then loads the folder that
    worker made: it neither unpacks nor downloads a second time."""
    url, _, requests = served
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "CIFARLAB_DATA"}
    env["XDG_CACHE_HOME"] = str(cache)
    if where == "archive-as-data":
        dest = tmp_path / "data"
        dest.mkdir()
        os.link(made_archive[0], dest / "cifar-10-binary.tar.gz")
        data = dest / "cifar-10-binary.tar.gz"
    else:
        dest = cache / "cifarlab"
        dest.mkdir(parents=True)
        data = tmp_path / "empty"
        data.mkdir()
    lock = open(dest / ".cifar-10-batches-bin.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)  # this test is the worker unpacking
    err = tmp_path / "stderr"
    with open(err, "w") as e:
        p = subprocess.Popen([sys.executable, "-c", _WORKER, made_archive[1], str(data), url], env=env,
                             stdout=subprocess.PIPE, stderr=e, text=True)
    try:
        deadline = time.time() + 120
        while "waiting for another process" not in err.read_text():
            assert p.poll() is None and time.time() < deadline, err.read_text()
            time.sleep(0.05)
        assert f"making {dest / D.BIN_DIR} (it holds {dest / '.cifar-10-batches-bin.lock'})" in err.read_text()
        assert p.poll() is None and not (dest / D.BIN_DIR).exists() and not list(dest.glob(".extract*"))
        folder = D._unpack(made_archive[0], dest)
        made = folder.stat().st_ino, (folder / "data_batch_1.bin").stat().st_ino
    finally:
        lock.close()  # releases the lock
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, err.read_text()
    assert out.split(" ", 1) == [str(folder), "[6, 9, 9, 4, 1]\n"]
    assert (folder.stat().st_ino, (folder / "data_batch_1.bin").stat().st_ino) == made  # reused, not unpacked again
    assert requests == [] and not (cache / "cifarlab" / "cifar-10-binary.tar.gz").exists()  # nothing downloaded
    assert not list(dest.glob(".extract*")) and not list(dest.glob("*.part"))


@pytest.mark.parametrize("url, why", [
    ("cifar-10-binary.tar.gz", "no scheme"),
    ("www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "no scheme"),
    ("localhost:8000/cifar-10-binary.tar.gz", "unknown scheme localhost://"),
    ("gopher://example.org/cifar-10-binary.tar.gz", "unknown scheme gopher://"),
    ("http:///cifar-10-binary.tar.gz", "no host"),
    ("https://", "no host"),
    ("http://[::1/cifar-10-binary.tar.gz", "Invalid IPv6 URL"),
    ("http://127.0.0.1:port/cifar-10-binary.tar.gz", "Port could not be cast"),
    ("http://127.0.0.1:70000/cifar-10-binary.tar.gz", "Port out of range"),
])
def test_a_malformed_download_url_is_a_data_error_naming_it(url, why, tmp_path, monkeypatch):
    dest = tmp_path / "dl" / "cifar-10-binary.tar.gz"
    with pytest.raises(D.DataError) as e:
        D.download(url, dest, "0" * 32, progress=False)
    msg = str(e.value)
    assert f"the download URL {url!r} is malformed ({why}" in msg, msg
    assert "CIFARLAB_URL" in msg and "--data PATH" in msg, msg
    assert not dest.parent.exists()  # nothing was made for it
    # and through the loader, as CIFARLAB_URL reaches it
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CIFARLAB_DATA")
    monkeypatch.setenv("CIFARLAB_URL", url)
    with pytest.raises(D.DataError, match="is malformed") as e:
        D.load_cifar10(tmp_path / "nowhere")
    assert "CIFAR-10 not found" in str(e.value) and not list((tmp_path / "cache").rglob("*.part"))


@pytest.fixture
def bad_server():
    """A loopback server with two faulty replies: /short promises 10 MB and closes after 64 KiB,
    /garbage answers with a line that is not HTTP."""
    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            path = self.rfile.readline().split()[1]
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            if path == b"/short":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n" + b"\0" * 65536)
            else:
                self.wfile.write(b"HELLO THERE\r\n\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path, says", [
    ("/short", "the connection closed after 65,536 of 10,485,760 bytes"),
    ("/garbage", "BadStatusLine: HELLO THERE"),
])
def test_a_cut_short_or_garbled_download_is_a_data_error_naming_the_url(bad_server, path, says, tmp_path):
    url = bad_server + path
    dest = tmp_path / "dl" / "cifar-10-binary.tar.gz"
    with pytest.raises(D.DataError) as e:
        D.download(url, dest, "0" * 32, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"could not download {url}: {says}. ") and "MD5" not in msg, msg
    assert "run again" in msg and "--data PATH" in msg, msg
    assert list(dest.parent.iterdir()) == []  # neither the file nor its .part


def test_stratified_split_is_balanced_and_seeded(cifar):
    keep, hold = D.stratified_split(cifar.y_train, 5000, seed=1)
    assert np.bincount(cifar.y_train[hold]).tolist() == [500] * 10
    assert len(np.intersect1d(keep, hold)) == 0 and len(keep) + len(hold) == 50000
    assert np.array_equal(hold, D.stratified_split(cifar.y_train, 5000, seed=1)[1])
    assert not np.array_equal(hold, D.stratified_split(cifar.y_train, 5000, seed=2)[1])
