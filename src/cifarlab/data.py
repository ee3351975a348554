"""CIFAR-10 on disk and in memory: find, verify, download, decode, cache.

    from cifarlab.data import load_cifar10
    ds = load_cifar10()            # --data / $CIFARLAB_DATA / user cache, else download
    ds.x_train.shape               # (50000, 3, 32, 32) uint8, channels first
    ds.y_train[:5]                 # array([6, 9, 9, 4, 1])

Both official layouts are read: the binary version (`cifar-10-batches-bin/` or
`cifar-10-binary.tar.gz`) and the python version (`cifar-10-batches-py/` or
`cifar-10-python.tar.gz`). Every file is checked against its official MD5 before
it is trusted; the decoded arrays are cached in the user cache folder, keyed by
those MD5s, so later loads are one `np.load`. A cache file is used only if its arrays are
CIFAR-10's (shapes, dtypes, 5,000 training and 1,000 test images of each class, and for the
binary version the SHA-256 of the arrays its official files decode to, BIN_ARRAYS_SHA256);
otherwise it is rebuilt, with a line on stderr saying so. An archive is unpacked only if none of its members could land
outside its folder. Unpacking holds an exclusive flock on `.FOLDER.lock` beside the folder
it makes, so workers that load one archive at once unpack it once: the others wait, then
reuse the folder, as every later load does while its files match their MD5s.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import pickle
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CifarlabError
from .files import atomic_write, sweep, temp_dir, temp_file

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

BIN_DIR = "cifar-10-batches-bin"
PY_DIR = "cifar-10-batches-py"
# Official MD5s of the published files (binary: the data set's README; python: the
# same values torchvision checks).
BIN_MD5 = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
PY_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
ARCHIVES = {  # archive name -> (md5, folder it unpacks to)
    "cifar-10-binary.tar.gz": ("c32a1d4ab5d03f1284b67883e8d87530", BIN_DIR),
    "cifar-10-python.tar.gz": ("c58f30108f718f92721af3b95e74349a", PY_DIR),
}
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
RECORD = 1 + 3 * 32 * 32  # binary version: label byte, then R, G, B planes

# The full training set's statistics (per channel, 0-255 scale), for reference: norm=standardize
# computes its own from the images a run trains on (engine.prepare_data), which are these with all 50,000.
TRAIN_MEAN = (125.307, 122.950, 113.865)
TRAIN_STD = (62.993, 62.089, 66.705)


class DataError(CifarlabError, RuntimeError):
    """A data set problem a user can fix; the message says how."""


@dataclass
class CIFAR10:
    x_train: np.ndarray  # (50000, 3, 32, 32) uint8
    y_train: np.ndarray  # (50000,) int64
    x_test: np.ndarray  # (10000, 3, 32, 32) uint8
    y_test: np.ndarray  # (10000,) int64
    source: str = ""
    classes: tuple = CLASSES


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cifarlab"


def _fix_hint(where: Path) -> str:
    return (f"Replace it with a fresh copy of the official CIFAR-10 file, or delete {where} "
            f"and let cifarlab download it again ({URL}).")


def _fault(folder: Path, md5s: dict[str, str]) -> str | None:
    """The first missing or corrupt file of `folder`, said in words; None when all match."""
    for name, want in md5s.items():
        path = folder / name
        if not path.is_file():
            return f"CIFAR-10 file missing: {path}"
        got = md5sum(path)
        if got != want:
            return f"CIFAR-10 file corrupt: {path} has MD5 {got}, expected {want}"
    return None


def _key(md5s: dict[str, str]) -> str:
    return hashlib.md5("".join(sorted(md5s.values())).encode()).hexdigest()


BIN_KEY = _key(BIN_MD5)  # the cache key of the official binary version


def verify(folder: Path, md5s: dict[str, str]) -> str:
    """Raise DataError naming the first missing or corrupt file of `folder`.

    Returns a key made of the verified MD5s, which names the decoded-array cache.
    """
    if (fault := _fault(folder, md5s)) is not None:
        raise DataError(f"{fault}. {_fix_hint(folder)}")
    return _key(md5s)


def read_bin_folder(folder: Path, md5s: dict[str, str] | None = None) -> CIFAR10:
    folder = Path(folder)
    key = verify(folder, BIN_MD5 if md5s is None else md5s)
    if (cached := _cached(key, folder)) is not None:
        return cached

    def read(name):
        raw = np.fromfile(folder / name, dtype=np.uint8).reshape(-1, RECORD)
        return raw[:, 1:].reshape(-1, 3, 32, 32).copy(), raw[:, 0].astype(np.int64)

    parts = [read(f"data_batch_{i}.bin") for i in range(1, 6)]
    x_test, y_test = read("test_batch.bin")
    return _store(key, _checked(folder, CIFAR10(np.concatenate([p[0] for p in parts]),
                               np.concatenate([p[1] for p in parts]), x_test, y_test, str(folder))))


class _ArraysOnly(pickle.Unpickler):
    """Unpickles the python version's batches (dicts, lists, bytes and NumPy arrays) and
    nothing that could run code, whatever the file holds."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it would call {module}.{name}")
        return super().find_class(module, name)


def read_py_folder(folder: Path, md5s: dict[str, str] | None = None) -> CIFAR10:
    folder = Path(folder)
    key = verify(folder, PY_MD5 if md5s is None else md5s)
    if (cached := _cached(key, folder)) is not None:
        return cached

    def read(name):
        with open(folder / name, "rb") as f:
            try:
                d = _ArraysOnly(f, encoding="bytes").load()
            except pickle.UnpicklingError as e:
                raise DataError(f"{folder / name}: refused to unpickle: {e}; nothing in it was run. "
                                f"{_fix_hint(folder)}") from None
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return x, np.asarray(d[b"labels"], dtype=np.int64)

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = read("test_batch")
    return _store(key, _checked(folder, CIFAR10(np.concatenate([p[0] for p in parts]),
                               np.concatenate([p[1] for p in parts]), x_test, y_test, str(folder))))


def _check_members(archive: Path, members, folder: str) -> list:
    """The regular files under `folder/` that `archive` holds; DataError if any member could
    land outside the extraction folder (an absolute path, `..`, a link, a device)."""
    keep = []
    for m in members:
        parts = m.name.replace("\\", "/").split("/")
        unsafe = ("an absolute path" if m.name.startswith(("/", "\\"))
                  else "a path with '..'" if ".." in parts
                  else f"a link to {m.linkname!r}" if m.issym() or m.islnk()
                  else "a device or pipe" if not (m.isfile() or m.isdir())
                  else None)
        if unsafe:
            raise DataError(f"{archive}: refused to unpack: member {m.name!r} is {unsafe}, which the official "
                            f"CIFAR-10 archive never holds; nothing was extracted. {_fix_hint(archive)}")
        if m.isfile() and m.name.startswith(folder + "/"):
            keep.append(m)
    return keep


FOLDER_MD5 = {BIN_DIR: BIN_MD5, PY_DIR: PY_MD5}  # an unpacked folder -> its files' official MD5s


@contextlib.contextmanager
def _unpack_lock(dest_parent: Path, folder: str):
    """An exclusive flock on DEST_PARENT/.FOLDER.lock while FOLDER is made there (downloaded,
    unpacked or replaced): of several processes one makes it, the others wait (saying so on
    stderr) and then find it made. The lock file stays: removing it would let two holders in."""
    lock = dest_parent / f".{folder}.lock"
    try:
        f = open(lock, "a")
    except OSError as e:
        raise DataError(f"cannot create the lock file {lock} ({e.strerror or e}) that unpacking CIFAR-10 into "
                        f"{dest_parent} needs; make that folder writable, or unpack the archive elsewhere and "
                        f"pass --data to the unpacked folder") from None
    with f:  # closing it releases the lock, however the block ends
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"cifarlab: waiting for another process making {dest_parent / folder} (it holds {lock})",
                  file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _intact(final: Path, archive: Path) -> bool:
    """Whether `final`, unpacked before, holds every file with its official MD5 (so it is reused);
    a damaged one is said on stderr, as it is about to be unpacked again."""
    if not final.exists():
        return False
    fault = _fault(final, FOLDER_MD5[final.name]) if final.is_dir() else "not a folder"
    if fault is None:
        return True
    print(f"cifarlab: {final} is damaged ({fault}); unpacking {archive} again", file=sys.stderr)
    return False


def _check_archive(archive: Path, md5: str) -> None:
    got = md5sum(archive)
    if got != md5:
        raise DataError(f"CIFAR-10 archive corrupt: {archive} has MD5 {got}, expected {md5}. "
                        f"{_fix_hint(archive)}")


def _extract(archive: Path, dest_parent: Path, md5: str | None = None) -> Path:
    """The data set's folder in `dest_parent`: reused if it is there with every official MD5,
    else unpacked from `archive` (first checked against `md5`, when given). Both under the
    folder's lock, so two workers loading one archive at once unpack it once."""
    folder = ARCHIVES[archive.name][1]
    with _unpack_lock(dest_parent, folder):
        final = dest_parent / folder
        if _intact(final, archive):
            return final
        if md5 is not None:
            _check_archive(archive, md5)
        return _unpack(archive, dest_parent)


def _unpack(archive: Path, dest_parent: Path) -> Path:
    """Unpack `archive` next to its final place, then rename: never half a folder, never a
    file outside it (every member is checked first, on every Python version). The caller
    holds the folder's lock."""
    folder = ARCHIVES[archive.name][1]
    final = dest_parent / folder
    sweep(dest_parent, ".extract.*", ".extract-*")  # left by an extraction that was killed
    tmp = temp_dir(dest_parent, "extract")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _check_members(archive, tar.getmembers(), folder)
            if hasattr(tarfile, "data_filter"):  # Python 3.12, 3.11.4+, 3.10.12+: the library checks too
                tar.extractall(tmp, members=members, filter="data")
            else:
                tar.extractall(tmp, members=members)
        if final.exists() or final.is_symlink():  # a damaged one: moved aside, then removed with tmp
            os.replace(final, tmp / (folder + ".old"))
        os.replace(tmp / folder, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _candidates(path: Path):
    """Folders or archives under (or at) `path` that may hold the data set."""
    path = Path(path).expanduser()
    if path.name in (BIN_DIR, PY_DIR) or path.name in ARCHIVES:
        yield path
    for name in (BIN_DIR, PY_DIR, *ARCHIVES):
        yield path / name
    # A folder holding the files directly, under whatever name the user gave it.
    yield path


def _open(path: Path) -> CIFAR10 | None:
    if path.is_file() and path.name in ARCHIVES:
        return _open_archive(path)
    if not path.is_dir():
        return None
    names = {p.name for p in path.iterdir()}
    if names & set(BIN_MD5):
        return read_bin_folder(path)
    if names & set(PY_MD5):
        return read_py_folder(path)
    return None


def _open_archive(path: Path) -> CIFAR10:
    """An archive: its folder unpacked before (beside it, or in the cache when its folder is
    read-only) if that is intact, else unpacked now."""
    md5, folder = ARCHIVES[path.name]
    target = path.parent if os.access(path.parent, os.W_OK) else cache_dir()
    for done in dict.fromkeys((path.parent / folder, target / folder)):
        if done.is_dir():
            with contextlib.suppress(DataError):  # damaged: unpacked again below, saying so
                if (ds := _open(done)) is not None:
                    return ds
    target.mkdir(parents=True, exist_ok=True)
    return _open(_extract(path, target, md5))


def _by_hand(name: str) -> str:
    return f"download {name} by hand (https://www.cs.toronto.edu/~kriz/cifar.html) and pass --data PATH"


def _check_url(url: str, name: str = "cifar-10-binary.tar.gz") -> None:
    """DataError unless `url` is a whole address urllib fetches: http(s), ftp or file, with a
    host (and a numeric port) for the network ones."""
    why = None
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in 0-65535
    except ValueError as e:
        why = str(e)
    else:
        if not parts.scheme:
            why = "no scheme such as https://"
        elif parts.scheme not in ("http", "https", "ftp", "file"):
            why = f"unknown scheme {parts.scheme}:// (http, https, ftp or file)"
        elif parts.scheme != "file" and not parts.hostname:
            why = "no host"
    if why is not None:
        raise DataError(f"the download URL {url!r} is malformed ({why}). Give a whole address such as {URL} "
                        f"(CIFARLAB_URL sets a mirror's), or {_by_hand(name)}")


def _length(headers) -> int | None:
    """Content-Length, or None where it is missing or not a number."""
    try:
        n = int(headers.get("Content-Length") or "")
    except ValueError:
        return None
    return n if n >= 0 else None


def download(url: str, dest: Path, md5: str, progress=True) -> Path:
    """Fetch `url` to `dest` via a `.part` file; the file appears only when it is whole and its
    MD5 is right, and the `.part` file is removed however the download ends (Ctrl-C included).
    A malformed URL, a failed or cut-short download: DataError naming the URL and the fix."""
    dest = Path(dest)
    _check_url(url, dest.name)
    again = f"Check the address and the connection and run again (nothing was kept), or {_by_hand(dest.name)}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    # .part files of downloads that were killed, and the fixed-name one of earlier versions
    sweep(dest.parent, f".{dest.name}.*.part", dest.name + ".part")
    fd, part = temp_file(dest.parent, dest.name, ".part")
    try:
        try:
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=30) as r:
                total, got = _length(r.headers), 0
                from .progress import Progress
                bar = Progress(total or None, desc=f"download {dest.name}", unit="B", enabled=progress)
                while block := r.read(1 << 20):
                    f.write(block)
                    got += len(block)
                    bar.update(len(block))
                bar.close()
        except urllib.error.HTTPError as e:
            raise DataError(f"could not download {url}: HTTP {e.code} {e.reason}. {again}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise DataError(f"could not download {url}: {getattr(e, 'reason', e)}. {again}") from None
        except (ValueError, http.client.HTTPException) as e:  # a reply that is not HTTP, a bad URL urllib found
            raise DataError(f"could not download {url}: {type(e).__name__}: {_one_line(e)}. {again}") from None
        if total is not None and got < total:
            raise DataError(f"could not download {url}: the connection closed after {got:,} of {total:,} bytes. "
                            f"{again}")
        digest = md5sum(part)
        if digest != md5:
            raise DataError(f"downloaded {url} but its MD5 is {digest}, expected {md5}; nothing was kept. That address "
                            f"does not serve the official {dest.name}: use {URL}, or {_by_hand(dest.name)}")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or "no detail"


def locate(data: str | os.PathLike | None = None) -> list[Path]:
    """The places searched, in order: --data, $CIFARLAB_DATA, the user cache folder."""
    places = []
    if data:
        places.append(Path(data).expanduser())
    if os.environ.get("CIFARLAB_DATA"):
        places.append(Path(os.environ["CIFARLAB_DATA"]).expanduser())
    places.append(cache_dir())
    return places


def _checked(folder: Path, ds: CIFAR10) -> CIFAR10:
    """Arrays decoded from files whose MD5s were accepted (the official ones, or those a caller gave)."""
    if (fault := arrays_fault(ds)) is not None:
        raise DataError(f"{folder}: its files decode to {fault}; they are not CIFAR-10. {_fix_hint(folder)}")
    return ds


def _cache_file(key: str) -> Path:
    return cache_dir() / "arrays" / f"cifar10-{key}.npz"


# SHA-256 of the binary version's decoded arrays (x_train, y_train, x_test, y_test: their bytes in
# that order, uint8 images and int64 labels), which its official MD5s fix: a cached copy of them
# that differs by one byte (a label set to 0, a pixel changed) is not used but rebuilt.
BIN_ARRAYS_SHA256 = "9048fcbac9c08a64d57a7c5a5a66750a974ad4eab380914df129f7e223d823df"
SHAPES = ((50000, 3, 32, 32), (50000,), (10000, 3, 32, 32), (10000,))  # x_train, y_train, x_test, y_test


def arrays_sha256(ds: CIFAR10) -> str:
    h = hashlib.sha256()
    for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def arrays_fault(ds: CIFAR10) -> str | None:
    """What is wrong with decoded arrays (shapes, dtypes, labels outside 0-9 or not 5,000 training
    and 1,000 test images of each class, as CIFAR-10 has), None when nothing is."""
    shapes = (ds.x_train.shape, ds.y_train.shape, ds.x_test.shape, ds.y_test.shape)
    if shapes != SHAPES:
        return f"arrays of shapes {shapes}, not {SHAPES}"
    dtypes = tuple(str(a.dtype) for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
    if dtypes != ("uint8", "int64", "uint8", "int64"):
        return f"arrays of dtypes {dtypes}, not uint8 images and int64 labels"
    for name, y, per in (("training", ds.y_train, 5000), ("test", ds.y_test, 1000)):
        if y.min() < 0 or y.max() >= len(CLASSES):
            return f"{name} labels from {y.min()} to {y.max()}, outside 0-{len(CLASSES) - 1}"
        counts = np.bincount(y, minlength=len(CLASSES))
        if (counts != per).any():
            return f"{name} labels {counts.tolist()} of each class, not {per:,} each"
    return None


def _cached(key: str, folder: Path) -> CIFAR10 | None:
    path = _cache_file(key)
    sweep(path.parent, ".*.tmp", "tmp*.tmp")  # cache writes that were killed, or cut short by a full disk
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            ds = CIFAR10(z["x_train"], z["y_train"], z["x_test"], z["y_test"], str(folder))
        if (fault := arrays_fault(ds)) is not None:
            raise ValueError(fault)
        if key == BIN_KEY and arrays_sha256(ds) != BIN_ARRAYS_SHA256:
            raise ValueError("its arrays differ from those the official files decode to")
        return ds
    except Exception as e:  # truncated, overwritten, not a zip at all: rebuilt from the verified files
        print(f"cifarlab: the decoded-array cache {path} is damaged ({type(e).__name__}: "
              f"{' '.join(str(e).split())}); rebuilding it", file=sys.stderr)
        return None


def _store(key: str, ds: CIFAR10) -> CIFAR10:
    """Keep the decoded arrays; a read-only home or a full disk is no reason to fail
    (the temporary is removed, nothing half-written stays)."""
    try:
        atomic_write(_cache_file(key), lambda f: np.savez(f, x_train=ds.x_train, y_train=ds.y_train,
                                                          x_test=ds.x_test, y_test=ds.y_test))
    except OSError:
        pass
    return ds


def load_cifar10(data: str | os.PathLike | None = None, download_ok: bool = True,
                 url: str | None = None) -> CIFAR10:
    """Find, verify and decode CIFAR-10; see the module docstring for the search order.

    The download comes from `url`, else $CIFARLAB_URL (a mirror), else the official site.
    """
    url = url or os.environ.get("CIFARLAB_URL") or URL
    places = locate(data)
    for place in places:
        for cand in _candidates(place):
            try:
                ds = _open(cand)
            except PermissionError as e:  # the data set is there, but this user may not read it
                raise DataError(f"{e.filename}: permission denied, so CIFAR-10 cannot be read there; make it "
                                f"readable to this user (chmod -R a+rX {cand}) or pass --data a readable "
                                f"copy") from None
            if ds is not None:
                return ds
    if not download_ok:
        raise DataError(_not_found(places))
    cache = cache_dir()
    archive = cache / "cifar-10-binary.tar.gz"
    final = cache / BIN_DIR
    try:
        cache.mkdir(parents=True, exist_ok=True)
        # Under the folder's lock: of workers that all found nothing, one downloads and unpacks,
        # the others wait and then find the folder made.
        with _unpack_lock(cache, BIN_DIR):
            if not _intact(final, archive):
                if archive.is_file():  # downloaded by a process that stopped before unpacking it
                    _check_archive(archive, ARCHIVES[archive.name][0])
                else:
                    download(url, archive, ARCHIVES[archive.name][0])
                _unpack(archive, cache)
    except DataError as e:
        raise DataError(f"{e}\n{_not_found(places)}") from None
    return _open(final)


def _not_found(places) -> str:
    tried = "\n".join(f"  - {p}" for p in places)
    return ("CIFAR-10 not found. Looked in:\n" + tried + "\n"
            "Supply it by hand: download cifar-10-binary.tar.gz (or the python version) from "
            "https://www.cs.toronto.edu/~kriz/cifar.html, unpack it, and pass --data PATH "
            "(or set CIFARLAB_DATA) to the folder, or put the archive in " + str(cache_dir()) + ".")


# --- in-memory splits ---------------------------------------------------------------

def stratified_split(y: np.ndarray, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, holdout): `n_holdout` images, an equal share from every class."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    if n_holdout % len(classes):
        raise ValueError(f"val_split={n_holdout} must be a multiple of {len(classes)} (one share per class)")
    per = n_holdout // len(classes)
    hold = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in classes])
    mask = np.ones(len(y), bool)
    mask[hold] = False
    return np.flatnonzero(mask), np.sort(hold)


def subset_indices(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A class-balanced subset of `n` indices (for quick runs and tests)."""
    keep, hold = stratified_split(y, n - n % len(np.unique(y)), seed + 7919)
    return hold
