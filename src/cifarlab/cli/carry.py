"""cifarlab carry: a study's records and unfinished runs, out of a study folder and into another."""
from __future__ import annotations

import shlex

from ..checkpoint import CheckpointError
from ..errors import UsageError
from ..runfolder import RunFolderError
from ..study.carry import carry, commit_message
from ..study.jobs import StudyError


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("carry", help=help,
                       description="Move a long study between machines. `out`: a study folder's records and "
                                   "the latest checkpoint of each unfinished run into a records folder "
                                   "(results/NAME in a repository; a run finished since loses its checkpoint "
                                   "there). `in`: a records folder into a study folder, where `cifarlab study` "
                                   "resumes each carried run. study.json is merged both ways; a finished run "
                                   "is never replaced by an unfinished one, nor a run by an earlier state.")
    p.add_argument("direction", choices=("out", "in"), help="out: STUDY_DIR -> RECORDS; in: RECORDS -> STUDY_DIR")
    p.add_argument("source", metavar="FROM", help="out: the study folder; in: the records folder")
    p.add_argument("dest", metavar="TO", help="out: the records folder; in: the study folder (created if new)")
    p.set_defaults(func=cmd_carry)


def cmd_carry(args) -> int:
    try:
        done = carry(args.source, args.dest, args.direction)
    except (StudyError, CheckpointError, RunFolderError) as e:
        raise UsageError(str(e)) from None
    kept = [c for c in done if c.action == "carried"]
    size = sum(c.bytes for c in kept)
    print(f"{len(done)} runs: {sum(c.action == 'finished' for c in done)} finished, {len(kept)} unfinished carried "
          f"({size / 1e6:.1f} MB of checkpoints), {sum(c.action == 'skipped' for c in done)} left as they were")
    if args.direction == "out" and kept:
        print(f"commit them once, before the machine goes: git add {shlex.quote(args.dest)} && "
              f"git commit -m {shlex.quote(commit_message(done, args.dest))}")
    if args.direction == "in" and kept:
        commits = sorted({c.commit[:7] for c in kept if c.commit})
        print(f"continue with `cifarlab study --out {shlex.quote(args.dest)} ...` (the study's own options) "
              f"from a checkout of the commit each run began with: {', '.join(commits) or 'unknown'}")
    return 0
