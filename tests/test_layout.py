"""The package's layers: imports go one way (cli -> families -> core), with no cycle; the
command's help and preset list load neither torch nor matplotlib."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cifarlab

PKG = Path(cifarlab.__file__).parent
FAMILIES = ("inference", "study", "reporting", "bench")  # subpackages of one concern each, above the core
# The one way a family may import another: reporting reads what a study writes (study.json, its run
# folders, how far a run got), so it imports the study family; the study never imports reporting.
READS = {"reporting": ("study",)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the cifarlab modules it imports, anywhere in its body (functions included)."""
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in mods and t != name}
        graph[name] = found
    return graph


def layer(module: str) -> tuple[int, str]:
    """(rank, family): core 0, a family 1, the command line 2."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("cli", "__main__"):
        return 2, "cli"
    if len(parts) > 1 and parts[1] in FAMILIES:
        return 1, parts[1]
    return 0, "core"


def test_imports_point_down_only():
    wrong = []
    for mod, targets in imports().items():
        rank, family = layer(mod)
        for t in targets:
            t_rank, t_family = layer(t)
            if t_rank > rank or (t_rank == rank == 1 and t_family != family
                                 and t_family not in READS.get(family, ())):
                wrong.append(f"{mod} ({family}) imports {t} ({t_family})")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle():
    graph = imports()
    # a package imports its own __init__ on the way in; that edge is not a cycle
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_layers_are_real():
    # the checks above would pass on an empty graph; this one makes sure they look at the package
    graph = imports()
    assert "cifarlab.train" in graph["cifarlab.study.jobs"] and "cifarlab.study.jobs" in graph["cifarlab.study.runner"]
    assert layer("cifarlab.cli.train") == (2, "cli") and layer("cifarlab.reporting.report") == (1, "reporting")
    assert "cifarlab.study.jobs" in graph["cifarlab.reporting.report"]  # the one import across families
    assert "cifarlab.reporting.report" in graph["cifarlab.cli.report"]
    assert not [t for m, ts in graph.items() if m.startswith("cifarlab.study") for t in ts
                if t.startswith("cifarlab.reporting")]
    assert layer("cifarlab.models.vgg") == (0, "core")


@pytest.mark.slow
def test_help_and_presets_load_neither_torch_nor_matplotlib():
    code = ("import sys\nfrom cifarlab.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert main(['presets']) == 0\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib', 'numpy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "vgg3" in out and out.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_import_cifarlab_loads_nothing_heavy():
    code = ("import sys, cifarlab\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib', 'numpy', 'yaml'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_what_a_process_without_torch_reads_loads_no_torch():
    """The Keras reference (benchmarks/keras_reference.py) must not load torch beside
    TensorFlow; it names its CPU and reads run folders with these modules."""
    code = ("import sys\nfrom cifarlab import config, data, machine, plots, runfolder\n"
            "assert 'family' in machine.cpu_name()\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_a_reader_that_stops_reading_is_no_error():
    # `cifarlab presets | head -1`: the pipe closes before the command writes
    p = subprocess.Popen([sys.executable, "-m", "cifarlab", "presets"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdout.close()
    err = p.stderr.read()
    p.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


# The core's inner order: helpers, then the domain (what is trained: config, data, models, optimisers,
# metrics, figures, the process group), then persistence (run folders, checkpoints), then the engine
# (the compute of a run), then the run's lifecycle (train). A module imports its own rank or below.
CORE_ORDER = (
    ("errors", "files", "progress", "machine", "runtime", "interrupt", "tensorboard"),
    ("config", "data", "augment", "models", "optim", "metrics", "plots", "distributed"),
    ("runfolder", "checkpoint"),
    ("engine",),
    ("train",),
)


def core_rank(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package itself
    return next((i for i, names in enumerate(CORE_ORDER) if parts[1] in names), -1)  # -1: not ranked


def test_the_core_imports_in_its_inner_order():
    graph = imports()
    core = [m for m in graph if layer(m)[0] == 0 and core_rank(m) is not None]
    unranked = sorted(m for m in core if core_rank(m) < 0)
    assert not unranked, f"core modules without a place in CORE_ORDER: {unranked}"
    wrong = [f"{m} (rank {core_rank(m)}) imports {t} (rank {core_rank(t)})" for m in core for t in graph[m]
             if layer(t)[0] == 0 and core_rank(t) is not None and core_rank(t) > core_rank(m)]
    assert not wrong, "core imports against its inner order:\n" + "\n".join(sorted(wrong))
    assert "cifarlab.engine" in graph["cifarlab.train"] and "cifarlab.train" not in graph["cifarlab.engine"]
    # training, bench, forecast, inference and report compute through the engine
    for m in ("cifarlab.bench.throughput", "cifarlab.study.forecast", "cifarlab.inference.predict"):
        assert "cifarlab.engine" in graph[m], m
