"""The study's claims and the groups its figures overlay, as data: claims.yaml beside this module.

    from cifarlab.reporting.claims import study_claims
    c = study_claims()          # read and checked once per process
    c.claims[0].said            # "centering inputs 'did not have a significant impact' (88.25 vs 87.82)"
    c.groups[0].presets         # ("vgg1", "vgg2", "vgg3")

A claim's published figures are not written in claims.yaml: its text names them ({a.seed_report},
{b.article}) and they are taken from the presets' `reference:`, where the results table reads them too.
"""
from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from ..errors import CifarlabError


class ClaimsError(CifarlabError):
    """claims.yaml is damaged or names what does not exist."""


@dataclass(frozen=True)
class Claim:
    """One claim of the study: `experiment` against `against`, and what the study said of it (`said`,
    its published figures filled in)."""
    experiment: str
    against: str
    said: str


@dataclass(frozen=True)
class Group:
    """Presets whose validation curves the report draws in one figure."""
    title: str
    presets: tuple[str, ...]

    @property
    def slug(self) -> str:
        """The figure's name: "group-" + this ("batchnorm-dropout-ablations")."""
        return self.title.lower().replace(" / ", "-").replace(" ", "-")


@dataclass(frozen=True)
class StudyClaims:
    claims: tuple[Claim, ...]
    groups: tuple[Group, ...]


CLAIM_KEYS = ("experiment", "against", "said")
GROUP_KEYS = ("title", "presets")


class _Figure:
    """A published figure in a claim's text: two decimals unless the text gives a format."""

    def __init__(self, value: float):
        self.value = float(value)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec or ".2f")


class _Missing(Exception):
    pass


class _Published:
    """{a.seed_report}: one preset's published figures, by source."""

    def __init__(self, preset: str, reference: dict):
        self._preset, self._reference = preset, reference

    def __getattr__(self, source: str):
        if source.startswith("_") or source not in self._reference:
            has = ", ".join(sorted(self._reference)) or "none"
            raise _Missing(f"preset {self._preset} publishes no {source} figure (its reference: has {has})")
        return _Figure(self._reference[source])


def _fill(text: str, a: str, b: str) -> str:
    from ..config import load_preset
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        wrong = [f for f in fields if f.split(".")[0] not in ("a", "b")]
        if wrong:
            raise _Missing(f"{{{wrong[0]}}} names neither a (the experiment) nor b (the one it is compared "
                           "with); write {a.seed_report}, {b.article}, ...")
        return text.format(a=_Published(a, load_preset(a).reference), b=_Published(b, load_preset(b).reference))
    except (ValueError, IndexError, KeyError) as e:
        raise _Missing(f"{text!r} is no text with figures ({e}); write {{a.seed_report}}, "
                       "{a.seed_report:.1f}, and {{ }} for a brace") from None


def _mapping(item, keys: tuple[str, ...], where: str) -> dict:
    if not isinstance(item, dict):
        raise ClaimsError(f"{where} must be a mapping of {', '.join(keys)}")
    missing = [k for k in keys if k not in item]
    unknown = sorted(str(k) for k in item if k not in keys)
    if missing or unknown:
        raise ClaimsError(f"{where}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"] if unknown
                                                                     else []))
            + f" (the keys are {', '.join(keys)})")
    return item


def load_claims(path) -> StudyClaims:
    """The claims and groups of the YAML file at `path`, checked: every preset named exists, every
    figure a claim's text names is published in its preset. A ClaimsError (one line) otherwise."""
    from ..config import preset_names
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ClaimsError(f"{path}: cannot be read ({e.strerror or e}); reinstall cifarlab") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ClaimsError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    data = _mapping(data, ("claims", "groups"), str(path))
    valid = preset_names()

    def preset(name, where):
        if not isinstance(name, str) or name not in valid:
            raise ClaimsError(f"{where}: unknown preset {name!r}; choose one of: {', '.join(valid)}")
        return name

    if not isinstance(data["claims"], list) or not data["claims"]:
        raise ClaimsError(f"{path}: claims must be a list of claims ({', '.join(CLAIM_KEYS)})")
    claims = []
    for i, item in enumerate(data["claims"], 1):
        where = f"{path}: claim {i}"
        c = _mapping(item, CLAIM_KEYS, where)
        a, b = preset(c["experiment"], where), preset(c["against"], where)
        where = f"{path}: claim {i} ({a} against {b})"
        if a == b:
            raise ClaimsError(f"{where}: an experiment against itself; name the preset it is compared with")
        if not isinstance(c["said"], str) or not c["said"].strip():
            raise ClaimsError(f"{where}: said must be the claim's text")
        try:
            claims.append(Claim(a, b, _fill(c["said"].strip(), a, b)))
        except _Missing as e:
            raise ClaimsError(f"{where}: {e}") from None
    if not isinstance(data["groups"], list):
        raise ClaimsError(f"{path}: groups must be a list of groups ({', '.join(GROUP_KEYS)})")
    groups = []
    for i, item in enumerate(data["groups"], 1):
        g = _mapping(item, GROUP_KEYS, f"{path}: group {i}")
        if not isinstance(g["title"], str) or not g["title"].strip():
            raise ClaimsError(f"{path}: group {i}: title must be text")
        where = f"{path}: group {i} ({g['title']})"
        if not isinstance(g["presets"], list) or len(g["presets"]) < 2:
            raise ClaimsError(f"{where}: presets must list two presets or more (one figure overlays them)")
        groups.append(Group(g["title"].strip(), tuple(preset(p, where) for p in g["presets"])))
    titles = [g.slug for g in groups]
    twice = sorted({t for t in titles if titles.count(t) > 1})
    if twice:
        raise ClaimsError(f"{path}: two groups draw the same figure ({', '.join(twice)}); give each its own title")
    return StudyClaims(tuple(claims), tuple(groups))


CLAIMS_FILE = "claims.yaml"


@functools.cache
def study_claims() -> StudyClaims:
    """The study's claims and groups (this package's claims.yaml), read and checked once."""
    with resources.as_file(resources.files("cifarlab.reporting") / CLAIMS_FILE) as path:
        return load_claims(path)
