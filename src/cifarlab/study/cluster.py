"""Ray, imported only when a command asks for it, and joined or started in one place.

    from cifarlab.study.cluster import connect
    ray = connect("127.0.0.1:6379")   # join a running cluster (`ray start --head ...`)
    ray = connect(None)               # or start a private one on this machine

Ray is the optional extra `cifarlab[ray]` (ray[tune]==2.58.0); without it these
commands stop with a message that says how to install it.
"""
from __future__ import annotations

import os

INSTALL = "pip install 'cifarlab[ray]'  (or: pip install 'ray[tune]==2.58.0')"


def require_ray():
    """The ray module, or a clear error naming the extra to install."""
    try:
        import ray
        import ray.tune  # noqa: F401  (tune pulls in pandas/pyarrow: part of the same extra)
    except ImportError as e:
        from ..errors import UsageError
        raise UsageError(f"this command runs on Ray, which is not installed ({e.msg}); {INSTALL}") from None
    return ray


def connect(address: str | None, num_cpus: int | None = None, log_to_driver: bool = True):
    """Join the cluster at `address`, or start a local instance (num_cpus: its CPU budget)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    # Workers must import this very tree (a source checkout run with PYTHONPATH=src too).
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    env = {"env_vars": {"PYTHONPATH": path}}
    for k in ("CIFARLAB_DATA", "XDG_CACHE_HOME"):  # where the data set and its decoded cache live
        if os.environ.get(k):
            env["env_vars"][k] = os.environ[k]
    kw = dict(include_dashboard=False, configure_logging=True, logging_level="warning",
              runtime_env=env, log_to_driver=log_to_driver)
    if address:
        ray.init(address=address, **kw)
    else:
        ray.init(num_cpus=num_cpus, **kw)
    return ray


def task_setup() -> None:
    """Call first in a Ray task (a study run, a tune trial). Ray puts the driver's script
    folder on a worker's sys.path; for `python -m cifarlab` that is the package folder
    itself, where cifarlab's own tensorboard.py would shadow TensorBoard (and any module
    named like a sibling): the folder is dropped."""
    import sys
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != package]
