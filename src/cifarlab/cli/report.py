"""cifarlab report: a study folder summarised in report.html and report.md."""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..study.report import (README_BEGIN, README_END, check_readme, copy_records, latest_study, parse_expect,
                      readme_table, update_readme, write_report)
from .common import add_data


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("report", help=help,
                       description="Summarise a study folder: results table with references, learning "
                                   "curves, group overlays, the best run's confusion matrix, statistics.")
    p.add_argument("study_dir", nargs="?", help="study folder (default: the most recent under ./studies)")
    add_data(p, "the test set for the best run's confusion matrix")
    p.add_argument("--readme", metavar="FILE", help="also write the results table into FILE, between the lines "
                                                    f"{README_BEGIN} and {README_END}")
    p.add_argument("--records", metavar="DIR", help="also copy the study's records (no checkpoints) and this "
                                                    "report into DIR, e.g. results/NAME in a repository")
    p.add_argument("--expect", metavar="PRESET[:SEEDS],...",
                   help="--readme: runs the table lists as not finished until they are (besides study.json's)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    try:
        parse_expect(args.expect)
        if args.readme:
            check_readme(args.readme)  # before the report's work, not after
        if args.records and args.study_dir and Path(args.records).resolve() == Path(args.study_dir).resolve():
            raise ValueError(f"--records {args.records} is the study folder itself; name another folder")
    except ValueError as e:
        raise UsageError(str(e)) from None
    study_dir = Path(args.study_dir) if args.study_dir else latest_study()
    rep = write_report(study_dir, args.data)
    print(f"{len(rep['rows'])} experiments, {sum(r['n'] for r in rep['rows'])} finished runs, "
          f"{len(rep['unfinished'])} unfinished, {len(rep['comparisons'])} comparisons"
          + (f", {len(rep['untested'])} trained without the test set" if rep.get("untested") else ""))
    print(f"-> {study_dir / 'report.md'}")
    if args.records:
        try:
            files = copy_records(study_dir, args.records)
        except ValueError as e:
            raise UsageError(str(e)) from None
        print(f"-> {args.records} ({len(files)} record files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB)")
    if args.readme:
        update_readme(args.readme, readme_table(rep, args.expect))
        print(f"-> {args.readme} (results table)")
    print(f"-> {study_dir / 'report.html'}")  # the page to open, last
    return 0
