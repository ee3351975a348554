"""Runs grouped by their settings, and the groups' labels: shared by `compare` (any run folders)
and the study report (rows by preset and settings), which import it and not each other.
"""
from __future__ import annotations

import json

# Settings that say how a run executes, not what it trains (and labels): not a reason to split a group.
IGNORED = ("seed", "name", "description", "reference", "comparable", "device", "threads", "channels_last",
           "compile", "eval_batch_size", "checkpoint_every")
MAX_LABEL_KEYS = 3
# Settings that build the network: runs that agree on them and on the seed start from the same weights
# (and see the same batches, whose order follows the seed alone), so two groups of one network are paired by seed.
NETWORK = ("model", "blocks", "widths", "dense", "dropout", "batchnorm", "bn_dropout_order", "whiten",
           "bn_freeze_weight")


def _value(v) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v).lower() if isinstance(v, bool) else str(v)


def settings_of(cfg: dict) -> dict:
    """The config of a run as it matters for grouping: defaults filled in, IGNORED left out."""
    from ..config import Config, to_dict
    full = {**to_dict(Config()), **cfg}
    return {k: v for k, v in full.items() if k not in IGNORED}


def network_of(cfg: dict) -> dict:
    """The settings of a run's config that build its network (NETWORK), defaults filled in."""
    full = settings_of(cfg)
    return {k: full[k] for k in NETWORK}


def label_groups(groups: list[dict], plain: dict | None = None) -> None:
    """Set each group's "label": its name (a preset's, usually), then what sets it apart from the
    groups of that name; and its "variant", those key=value words in full. `plain`, one of the groups,
    keeps the bare name, and each other group of its name is labelled by what it changes from it."""
    labels = set()
    for g in groups:
        # the name, then what sets the group apart: from `plain`, else from every other group of that name
        if plain is not None and g["name"] == plain["name"]:
            parts = [f"{k}={_value(v)}" for k, v in g["settings"].items()
                     if g is not plain and _value(v) != _value(plain["settings"].get(k))]
        else:
            kin = [h for h in groups if h["name"] == g["name"]]
            parts = [f"{k}={_value(v)}" for k, v in g["settings"].items()
                     if len({_value(h["settings"].get(k)) for h in kin}) > 1]
        label = " ".join([g["name"]] + parts[:MAX_LABEL_KEYS]
                         + ([f"(+{len(parts) - MAX_LABEL_KEYS} more)"] if len(parts) > MAX_LABEL_KEYS else []))
        while label in labels:  # the same name and the same first settings: mark it
            label += "'"
        labels.add(label)
        g["label"], g["variant"] = label, parts


def _against(g: dict, first: dict) -> str:
    """What a group changes from the first one, in key=value terms."""
    diff = [f"{k}={_value(v)} (vs {_value(first['settings'][k])})" for k, v in g["settings"].items()
            if _value(v) != _value(first["settings"][k])]
    return ", ".join(diff) or "the same settings"
