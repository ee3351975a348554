"""cifarlab presets: the presets with their epochs and reference accuracies."""
from __future__ import annotations

from ..config import load_preset, preset_names


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("presets", help=help)
    p.set_defaults(func=cmd_presets)


def cmd_presets(args) -> int:
    print(f"{'preset':<22} {'epochs':>6} {'seed report':>11} {'article':>7}  description")
    for name in preset_names():
        c = load_preset(name)
        ref = c.reference
        f = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
        print(f"{name:<22} {c.epochs:>6} {f(ref.get('seed_report')):>11} {f(ref.get('article')):>7}  "
              f"{c.description}")
    return 0
