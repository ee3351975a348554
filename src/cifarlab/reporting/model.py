"""The report's typed model: a results row, a comparison of two rows, a check against a published
figure, and a table cell that carries its own marks. The renderers read these attributes; report.json
and compare.json hold them as plain mappings (to_json), with the keys the files have always had."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Row:
    """One experiment (a preset, or a group of run folders of one setting): its seeds' test accuracies,
    their mean and spread, beside the published figures (all in %)."""
    experiment: str  # the row's label: the preset's name, or what it changes ("vgg3 amp=native")
    preset: str
    n: int
    seeds: list[int]
    test_acc: list[float]
    mean: float
    std: float | None  # None with one seed
    epochs: list[int]
    wall_seconds: float
    median_epoch_seconds: float | None  # the steadier cost figure (None where no run recorded one)
    comparable: bool
    train_images: list[int]
    description: str
    beyond_study: bool  # a recipe of cifarlab's own (fast94, fast_combined)
    device: str
    arithmetic: str
    network: dict  # the settings that build the network: what pairs two rows by seed
    late_epoch_sd: float | None
    seed_report: float | None
    diff_seed_report: float | None
    article: float | None
    diff_article: float | None
    variant: list[str] | None = None  # a study row's key=value words against its preset's plain row
    runs: list[str] = field(default_factory=list)
    against: str | None = None  # a study row of other settings: what it changes from the plain row

    def published(self, source: str) -> float | None:
        """The published figure of `source` ("seed_report", "article")."""
        return getattr(self, source)

    def diff(self, source: str) -> float | None:
        return getattr(self, f"diff_{source}")

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("variant", "against"):  # compare's rows have no variant, a plain row no `against`
            if d[k] is None:
                del d[k]
        return d


@dataclass
class Comparison:
    """Row a against row b: the verdict's test (paired by seed where the rows are pairs, else Welch's)
    and its numbers, and both tests in full (welch, paired: the mappings of report.welch and
    report.paired)."""
    a: str
    b: str
    claim: str
    n_a: int
    n_b: int
    test: str  # "paired" or "welch"
    pairing: str  # why the rows are pairs by seed or not
    diff: float
    t: float | None
    p: float
    df: float | None
    ci: tuple[float, float]
    welch: dict
    paired: dict | None
    distinguishable: bool
    same_epochs: bool
    comparable: bool
    within: float | None = None  # compare --within: the margin of equivalence (points)
    equivalent: bool | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        if self.within is None:
            del d["within"], d["equivalent"]
        return d


@dataclass
class Check:
    """A comparable study row against one published figure: beyond noise where the difference passes
    the limit (report.RULE)."""
    experiment: str
    source: str  # who published it: "seed report", "article"
    published: float
    ours: float
    n: int
    diff: float
    limit: float
    beyond: bool
    late_epoch_sd: float | None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Cell:
    """A table cell whose marks are fields, not text: `beyond`, a difference beyond noise (bold, and
    red in the HTML); `tone`, "yes" or "no" (the HTML colours it)."""
    text: str
    beyond: bool = False
    tone: str = ""

    def __str__(self) -> str:
        return self.text


def text_of(cell) -> str:
    """A cell's text, whether a Cell or a plain string."""
    return cell.text if isinstance(cell, Cell) else str(cell)


def to_json(o):
    """json.dumps(default=...) for the report's files: the model's objects as their mappings, the rest
    (paths) as text."""
    return o.to_json() if hasattr(o, "to_json") else str(o)


def typed(rep: dict) -> dict:
    """A report (or a comparison) as collect returns it, also from its JSON file: its rows, comparisons
    and checks as the model's objects (those already typed are kept)."""
    kinds = {"rows": Row, "comparisons": Comparison, "fidelity": Check}
    if all(isinstance(x, kinds[k]) for k in kinds for x in rep.get(k) or ()):
        return rep
    out = dict(rep)
    for key, kind in kinds.items():
        if key in rep:
            out[key] = [x if isinstance(x, kind) else kind(**x) for x in rep[key]]
    return out
