"""The report's typed model on the repo's own records (results/protocol, results/protocol-bf16): rows and
comparisons are objects, "beyond noise" is a field of a cell, and a report read back from its JSON renders
as the one collected."""
import json
import re
from pathlib import Path

import pytest

from cifarlab.reporting.model import Cell, Check, Comparison, Row, to_json, typed
from cifarlab.reporting.report import collect, readme_table, render_html, render_md, results_table

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture(scope="module")
def rep(tmp_path_factory):
    return collect([RESULTS / "protocol", RESULTS / "protocol-bf16"], figures=False,
                   out_dir=tmp_path_factory.mktemp("rep"))


def test_rows_comparisons_and_checks_are_typed(rep):
    assert rep["rows"] and all(isinstance(r, Row) for r in rep["rows"])
    assert rep["comparisons"] and all(isinstance(c, Comparison) for c in rep["comparisons"])
    assert rep["fidelity"] and all(isinstance(c, Check) for c in rep["fidelity"])
    vgg3 = next(r for r in rep["rows"] if r.experiment == "vgg3")
    assert vgg3.seed_report == 73.81 and vgg3.diff("seed_report") == pytest.approx(vgg3.mean - 73.81)
    assert vgg3.variant == [] and "against" not in vgg3.to_json()  # the plain row
    native = next(r for r in rep["rows"] if r.experiment == "vgg3 amp=native")
    assert native.variant == ["amp=native"] and native.to_json()["against"] == native.against


def test_beyond_noise_is_a_field_of_the_cell_not_its_text(rep):
    beyond = {(c.experiment, c.source) for c in rep["fidelity"] if c.beyond}
    assert ("weight_decay", "seed report") in beyond  # the records: weight_decay is beyond the limit
    head, body = results_table(rep)
    flagged = set()
    for row in body:
        for i, label in ((head.index("seed report") + 1, "seed report"), (head.index("article") + 1, "article")):
            cell = row[i]
            assert isinstance(cell, Cell) and "*" not in cell.text
            if cell.beyond:
                flagged.add((row[0], label))
    assert flagged == beyond
    md, html = render_md(rep), render_html(rep, Path("."))
    for experiment, label in beyond:
        r = next(r for r in rep["rows"] if r.experiment == experiment)
        d = r.diff("seed_report" if label == "seed report" else "article")
        assert f"| **{d:+.2f}** |" in md and f'<td class="beyond"><b>{d:+.2f}</b></td>' in html
    assert len(re.findall(r'class="beyond"', html)) == len(beyond)
    comparable = [row[-1] for row in body]
    assert {(c.text, c.tone) for c in comparable} == {("yes", "yes")}
    assert html.count('<td class="yes">yes</td>') == len(body)


def test_a_report_read_back_from_its_json_renders_the_same(rep):
    back = json.loads(json.dumps(rep, default=to_json))
    assert back["rows"][0]["experiment"] == rep["rows"][0].experiment  # plain mappings in the file
    again = typed(back)
    assert again["rows"] == rep["rows"] and again["fidelity"] == rep["fidelity"]
    assert render_md(back) == render_md(rep)
    assert readme_table(back, "vgg3:3") == readme_table(rep, "vgg3:3")
