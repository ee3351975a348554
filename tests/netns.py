"""Run a command in a private network namespace where only loopback exists.

Ray and torch.distributed advertise (and gloo binds) the machine's network address;
inside `unshare -n` the only address is 127.0.0.1, so the clusters these tests start
can neither reach nor be reached from anything else. Needs root (or user namespaces).
"""
import subprocess

import pytest


def loopback_only(argv: list[str]) -> list[str]:
    """argv, wrapped so that it runs with only the loopback interface (up).

    Its own PID namespace too: `ray stop` there sees only the Ray it started, and every
    process left in the namespace (a Ray daemon, say) ends when argv ends.
    """
    return ["unshare", "-n", "-p", "-f", "--mount-proc", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
            *argv]


def require_loopback_namespace() -> None:
    """Skip the calling test, with the reason, where no private network namespace can be made."""
    try:
        r = subprocess.run(loopback_only(["true"]), capture_output=True, text=True, timeout=30)
    except FileNotFoundError as e:
        pytest.skip(f"no private loopback-only network: {e.filename} is missing")
    if r.returncode != 0:
        pytest.skip(f"no private loopback-only network (unshare -n -p + ip link set lo up failed): "
                    f"{r.stderr.strip()}")
