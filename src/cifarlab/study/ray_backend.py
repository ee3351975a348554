"""The study's `ray` backend: each (preset, seed) run is a Ray task with declared resources.

    cifarlab study --backend ray                                  # a private Ray instance here
    cifarlab study --backend ray --address 10.0.0.5:6379 --gpus-per-run 0.25

    from cifarlab.study.ray_backend import run_ray
    results = run_ray(jobs, workers=2, on_result=print, address="127.0.0.1:6379")

A task calls the same `jobs.run_job(job)` as the local backend, so it writes the same
run folder (STUDY_DIR/runs/PRESET/seedK), skips a finished run and resumes an
interrupted one; the folder must therefore be on a file system every node sees (one
machine, or a shared mount such as NFS at the same path). Each task declares
job.threads CPUs (the threads it trains with) and `gpus_per_run` GPUs; a fraction such
as 0.25 packs four runs on one GPU. Ray places the tasks wherever those resources are
free, so `workers` only sets how the threads were divided when the jobs were planned.
"""
from __future__ import annotations

import dataclasses
import os


def _absolute(job):
    """Paths a worker on another node (or in another folder) can open."""
    data = os.path.abspath(job.data_path) if job.data_path else os.environ.get("CIFARLAB_DATA")
    return dataclasses.replace(job, run_dir=os.path.abspath(job.run_dir),
                               data_path=os.path.abspath(data) if data else None)


def _task(job):
    """run_job in a Ray worker, after cluster.task_setup."""
    from .cluster import task_setup
    from .jobs import run_job
    task_setup()
    return run_job(job)


def run_ray(jobs: list, workers: int = 1, on_result=None, address: str | None = None,
            gpus_per_run: float = 0.0) -> list[dict]:
    """Run jobs as Ray tasks (starting a local instance unless `address` names a cluster)."""
    from .cluster import connect
    ray = connect(address, num_cpus=None)
    on_result = on_result or (lambda r: None)
    _check_fits(ray, jobs, gpus_per_run)
    remote = ray.remote(_task)
    pending = {}
    for job in jobs:
        job = _absolute(job)
        cpus = job.threads or 1
        ref = remote.options(num_cpus=cpus, num_gpus=gpus_per_run, max_retries=0,
                             name=f"cifarlab {job.label}").remote(job)
        pending[ref] = job
    results = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        ref = done[0]
        job = pending.pop(ref)
        try:
            r = ray.get(ref)
        except Exception as e:  # the task's worker process died (out of memory, node lost)
            r = {"job": dataclasses.asdict(job), "status": "failed", "seconds": 0.0, "test_acc": None,
                 "error": f"Ray task failed: {type(e).__name__}: {str(e).splitlines()[0]}"}
        results.append(r)
        on_result(r)
    return results


def _check_fits(ray, jobs, gpus_per_run: float) -> None:
    """Fail fast when no node could ever hold one run (Ray would wait for ever)."""
    from .jobs import StudyError
    need_cpu = max((j.threads or 1) for j in jobs) if jobs else 0
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if not any(n["Resources"].get("CPU", 0) >= need_cpu and n["Resources"].get("GPU", 0) >= gpus_per_run
               for n in nodes):
        have = ", ".join(f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU "
                         f"{n['Resources'].get('GPU', 0):g} GPU" for n in nodes)
        raise StudyError(f"no node of the Ray cluster has {need_cpu} CPU and {gpus_per_run:g} GPU for one run "
                         f"(nodes: {have}); use more --workers (fewer threads per run) or another "
                         f"--gpus-per-run")
