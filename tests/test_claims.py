"""The study's claims and groups as data (reporting/claims.yaml): figures from the presets, a damaged file refused."""
import re

import pytest

from cifarlab.config import load_preset
from cifarlab.errors import CifarlabError
from cifarlab.reporting.claims import load_claims, study_claims

GOOD_GROUPS = "groups:\n  - {title: Depth, presets: [vgg1, vgg2, vgg3]}\n"
GOOD_CLAIM = "  - {experiment: dropout, against: vgg3, said: \"better ({a.seed_report} vs {b.seed_report})\"}\n"


def test_the_claims_quote_the_figures_their_presets_publish():
    c = study_claims()
    assert c is study_claims()  # read once
    assert len(c.claims) == 18 and [g.title for g in c.groups][:2] == ["Depth", "Regularisers"]
    for claim in c.claims:
        published = {f"{v:.2f}" for p in (claim.experiment, claim.against) for v in load_preset(p).reference.values()}
        published |= {f"{v:.1f}" for v in load_preset(claim.experiment).reference.values()}
        quoted = re.findall(r"\d+\.\d+(?= vs |\))", claim.said)  # the figures, not "a constant 0.2"
        assert set(quoted) <= published, (claim, published)
        assert "{" not in claim.said
    first = c.claims[0]
    assert (first.experiment, first.against) == ("centered", "combined")
    assert first.said.endswith("(88.25 vs 87.82)")
    assert next(x for x in c.claims if x.experiment == "adamw").said.endswith("failed (41.3)")
    assert next(g for g in c.groups if g.title.startswith("BatchNorm")).slug == "batchnorm-dropout-ablations"


def test_a_file_of_ones_own_is_read_the_same_way(tmp_path):
    f = tmp_path / "claims.yaml"
    f.write_text("claims:\n" + GOOD_CLAIM + GOOD_GROUPS)
    c = load_claims(f)
    assert c.claims[0].said == "better (82.12 vs 73.81)" and c.groups[0].presets == ("vgg1", "vgg2", "vgg3")


DAMAGED = [
    ("not YAML", "claims: [\n", "not valid YAML at line"),
    ("empty", "", "must be a mapping of claims, groups"),
    ("a list at the top", "- dropout\n", "must be a mapping of claims, groups"),
    ("no groups", "claims:\n" + GOOD_CLAIM, "missing groups"),
    ("a key of its own", "claims:\n" + GOOD_CLAIM + GOOD_GROUPS + "notes: x\n", "unknown notes"),
    ("no claims", "claims: []\n" + GOOD_GROUPS, "claims must be a list of claims"),
    ("a claim without its text", "claims:\n  - {experiment: dropout, against: vgg3}\n" + GOOD_GROUPS,
     "claim 1: missing said"),
    ("an unknown preset", "claims:\n  - {experiment: vgg9, against: vgg3, said: x}\n" + GOOD_GROUPS,
     "claim 1: unknown preset 'vgg9'; choose one of:"),
    ("against itself", "claims:\n  - {experiment: vgg3, against: vgg3, said: x}\n" + GOOD_GROUPS,
     "an experiment against itself"),
    ("a figure the preset does not publish",
     "claims:\n  - {experiment: adamw, against: combined, said: \"failed ({a.article})\"}\n" + GOOD_GROUPS,
     "claim 1 (adamw against combined): preset adamw publishes no article figure (its reference: has seed_report)"),
    ("a figure of neither side", "claims:\n  - {experiment: dropout, against: vgg3, said: \"{c.article}\"}\n"
     + GOOD_GROUPS, "{c.article} names neither a"),
    ("a broken brace", "claims:\n  - {experiment: dropout, against: vgg3, said: \"({a.seed_report)\"}\n"
     + GOOD_GROUPS, "is no text with figures"),
    ("empty text", "claims:\n  - {experiment: dropout, against: vgg3, said: \" \"}\n" + GOOD_GROUPS,
     "said must be the claim's text"),
    ("a group of one", "claims:\n" + GOOD_CLAIM + "groups:\n  - {title: Depth, presets: [vgg1]}\n",
     "group 1 (Depth): presets must list two presets or more"),
    ("a group's unknown preset", "claims:\n" + GOOD_CLAIM + "groups:\n  - {title: Depth, presets: [vgg1, vgg7]}\n",
     "group 1 (Depth): unknown preset 'vgg7'"),
    ("two groups of one title", "claims:\n" + GOOD_CLAIM + GOOD_GROUPS + "  - {title: depth, presets: [vgg1, vgg2]}\n",
     "two groups draw the same figure (depth)"),
]


@pytest.mark.parametrize("case,text,fragment", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_a_damaged_claims_file_is_one_clear_error(tmp_path, case, text, fragment):
    f = tmp_path / "claims.yaml"
    f.write_text(text)
    with pytest.raises(CifarlabError) as e:
        load_claims(f)
    msg = str(e.value)
    assert fragment in msg and str(f) in msg and "\n" not in msg, msg


def test_a_missing_claims_file_says_so(tmp_path):
    with pytest.raises(CifarlabError, match="cannot be read"):
        load_claims(tmp_path / "nowhere.yaml")
