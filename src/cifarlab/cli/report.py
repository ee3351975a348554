"""cifarlab report: a study folder (or several) summarised in report.html and report.md."""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..reporting.report import (README_BEGIN, README_END, check_readme, copy_records, latest_study,
                                parse_expect, readme_table, update_readme, write_report)
from .common import add_data


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("report", help=help,
                       description="Summarise a study folder: results table with references, learning "
                                   "curves, group overlays, the best run's confusion matrix, statistics. "
                                   "Several folders (e.g. an fp32 and a bf16 study) make one report in --out: "
                                   "a preset's runs of other settings are rows of their own, labelled by "
                                   "what they change (vgg3 amp=native), and tested against its plain row.")
    p.add_argument("study_dir", nargs="*", metavar="STUDY_DIR",
                   help="study folder(s) (default: the most recent under ./studies)")
    p.add_argument("--out", metavar="DIR", help="write the report into DIR (required with several study "
                                                "folders; default: the study folder)")
    add_data(p, "the test set for the best run's confusion matrix")
    p.add_argument("--readme", metavar="FILE", help="also write the results table into FILE, between the lines "
                                                    f"{README_BEGIN} and {README_END}")
    p.add_argument("--records", metavar="DIR", help="also copy the study's records (no checkpoints) and this "
                                                    "report into DIR, e.g. results/NAME in a repository "
                                                    "(one study folder only)")
    p.add_argument("--expect", metavar="PRESET[:SEEDS],...",
                   help="--readme: runs the table lists as not finished until they are (besides study.json's; "
                        "with several folders, runs of the first)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    dirs = [Path(d) for d in args.study_dir]
    try:
        parse_expect(args.expect)
        if len(dirs) > 1 and not args.out:
            raise ValueError(f"{len(dirs)} study folders make one report: name the folder it goes to (--out DIR)")
        if len(dirs) > 1 and args.records:
            raise ValueError("--records copies one study folder's records: run `cifarlab report STUDY_DIR "
                             "--records DIR` for each folder on its own")
        if len(dirs) > 1 and any(Path(args.out).resolve() == d.resolve() for d in dirs):
            raise ValueError(f"--out {args.out} is one of the study folders; name a folder of its own")
        if args.readme:
            check_readme(args.readme)  # before the report's work, not after
        if args.records and dirs and Path(args.records).resolve() == dirs[0].resolve():
            raise ValueError(f"--records {args.records} is the study folder itself; name another folder")
    except ValueError as e:
        raise UsageError(str(e)) from None
    dirs = dirs or [latest_study()]
    out = Path(args.out) if args.out else dirs[0]
    rep = write_report(dirs if len(dirs) > 1 else dirs[0], args.data, out)
    print(f"{len(rep['rows'])} experiments, {sum(r.n for r in rep['rows'])} finished runs, "
          f"{len(rep['unfinished'])} unfinished, {len(rep['comparisons'])} comparisons"
          + (f", {len(rep['untested'])} trained without the test set" if rep.get("untested") else "")
          + (f", {len(rep['mixed'])} computed in two arithmetics (not in the table)" if rep.get("mixed") else "")
          + (f", from {len(dirs)} study folders" if len(dirs) > 1 else ""))
    print(f"-> {out / 'report.md'}")
    if args.records:
        try:
            files = copy_records(dirs[0], args.records, out)
        except ValueError as e:
            raise UsageError(str(e)) from None
        print(f"-> {args.records} ({len(files)} record files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB)")
    if args.readme:
        update_readme(args.readme, readme_table(rep, args.expect))
        print(f"-> {args.readme} (results table)")
    print(f"-> {out / 'report.html'}")  # the page to open, last
    return 0
