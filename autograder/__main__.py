"""``python -m autograder``: grade one notebook or a folder of submissions, outside nbgrader.

    python -m autograder grade exercises/ex1_transformer/ex1_transformer.ipynb     # one notebook
    python -m autograder grade course/submitted --out graded --jobs 2               # a whole class
    python -m autograder isolation                                                  # what protects this machine
    python -m autograder bench                                                      # how long grading takes

A folder is read as ``<student>/**/<assignment>.ipynb`` (nbgrader's submitted/ layout fits). The command
writes ``scores.csv`` (a row per student, a column per part), ``report.md`` and
``feedback/<student>/<assignment>.md`` into ``--out``, replacing earlier files; it never changes a
submission, so grading again gives the same scores and loses nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .grade import grade_folder, grade_notebook
from .notebook import ASSIGNMENTS, SOLUTIONS, tests_source
from .report import notebook_report, write_all
from .sandbox import Limits, isolation


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grade", help="grade a notebook or a folder of submissions")
    g.add_argument("path", type=Path, help="a .ipynb file, or a folder of <student>/.../<assignment>.ipynb")
    g.add_argument("--assignment", choices=ASSIGNMENTS, help="grade a single notebook as this assignment")
    g.add_argument("--out", type=Path, help="folder for scores.csv, report.md and feedback/ (default: print only)")
    g.add_argument("--jobs", type=int, default=2, help="notebooks graded at once (default 2)")
    g.add_argument("--strict", action="store_true", help="exit 1 unless every automatic part scored full marks")
    g.add_argument("--visible-only", action="store_true",
                   help="run only the tests students can see (the default where solutions/ is absent)")
    sub.add_parser("isolation", help="say what protects the grader on this machine")
    b = sub.add_parser("bench", help="time grading a simulated class; writes results/grading-cpu.json")
    b.add_argument("--students", type=int, default=6)
    b.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)

    for line in isolation():
        print(line, file=sys.stderr if line.startswith("WARNING") else sys.stdout)
    if args.command == "isolation":
        return 0
    if args.command == "bench":
        if not SOLUTIONS.is_dir():
            parser.error("the benchmark grades the solutions, which only the instructor's repository has")
        from .bench import format_result, run

        print(format_result(run(args.students, args.jobs)))
        return 0
    if not args.path.exists():
        parser.error(f"{args.path} does not exist")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    source = tests_source(hidden=SOLUTIONS.is_dir() and not args.visible_only)
    if args.path.is_dir():
        results = grade_folder(args.path, jobs=args.jobs, source=source,
                               progress=lambda r: print(f"{r.student:>16} {r.assignment:<22} "
                                                        f"{r.points:g}/{r.max_points:g}  ({r.seconds:g} s)", flush=True))
    else:
        results = [grade_notebook(args.path, assignment=args.assignment, limits=Limits(), source=source)]
        print(notebook_report(results[0]))
    if args.out:
        write_all(results, args.out)
        print(f"wrote {args.out / 'scores.csv'}, {args.out / 'report.md'} and {args.out / 'feedback'}/")
    lost = any(r.points < r.max_points for r in results)
    return 1 if args.strict and lost else 0


if __name__ == "__main__":
    sys.exit(main())
