"""What the command writes: a score table (CSV) and readable reports, for the class and each student."""
from __future__ import annotations

import csv
import html
import io
import re
from pathlib import Path
from typing import Dict, List

from .grade import NotebookResult, safe_name, write_atomically


def _fmt(x: float) -> str:
    return f"{x:g}"


def text(value: object) -> str:
    """Student-controlled text (ids, messages that quote their code or errors) as one line of Markdown that
    renders as the text itself: HTML escaped, Markdown's active characters escaped, newlines removed."""
    line = html.escape(" ".join(str(value).split()), quote=True)
    return re.sub(r"([\\`*_{}\[\]()#+!|~>-])", r"\\\1", line)


def fenced(value: object) -> str:
    """Student-controlled text inside a code fence (where Markdown shows HTML as text): it may not close the fence."""
    return str(value).replace("```", "` ` `")


def cell(value: str) -> str:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula (OWASP's CSV-injection rule)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def score_table(results: List[NotebookResult]) -> str:
    """One row per student, one column per (assignment, part), a total per assignment and overall."""
    columns: Dict[str, List[str]] = {}
    for r in results:
        cols = columns.setdefault(r.assignment, [])
        for p in r.parts:
            if p.grade_id not in cols:
                cols.append(p.grade_id)
    header = ["student"]
    for a, parts in sorted(columns.items()):
        header += [f"{a}:{gid}" for gid in parts] + [f"{a}:total", f"{a}:max"]
    header += ["total", "max"]
    rows: Dict[str, Dict[str, str]] = {}
    for r in results:
        row = rows.setdefault(r.student, {"student": r.student, "total": "0", "max": "0"})
        for p in r.parts:
            row[f"{r.assignment}:{p.grade_id}"] = _fmt(p.points)
        row[f"{r.assignment}:total"] = _fmt(r.points)
        row[f"{r.assignment}:max"] = _fmt(r.max_points)
        row["total"] = _fmt(float(row["total"]) + r.points)
        row["max"] = _fmt(float(row["max"]) + r.max_points)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, restval="", lineterminator="\n")
    writer.writeheader()
    for student in sorted(rows):
        writer.writerow({k: cell(v) for k, v in rows[student].items()})
    return out.getvalue()


def notebook_report(r: NotebookResult) -> str:
    """The feedback one student reads for one exercise."""
    lines = [f"## {text(r.assignment)} ({text(r.student)}): {_fmt(r.points)} / {_fmt(r.max_points)} automatic points"]
    if r.written_points:
        lines.append(f"Written answers ({_fmt(r.written_points)} points) are graded by hand.")
    if r.notices:
        lines += ["", "Notices:"] + [f"- {text(n)}" for n in r.notices]
    lines.append("")
    for p in r.parts:
        tag = " (hidden test)" if p.hidden else ""
        lines.append(f"### {text(p.grade_id)}{tag}: {_fmt(p.points)} / {_fmt(p.max_points)}")
        lines += ["```text", *[fenced(m) for m in p.messages], "```"]
    return "\n".join(lines) + "\n"


def class_report(results: List[NotebookResult]) -> str:
    lines = ["# Grading report", "", "| student | assignment | points | max | time (s) |", "|---|---|---|---|---|"]
    lines += [f"| {text(r.student)} | {text(r.assignment)} | {_fmt(r.points)} | {_fmt(r.max_points)} | {r.seconds:g} |"
              for r in results]
    return "\n".join(lines) + "\n\n" + "\n".join(notebook_report(r) for r in results)


def write_all(results: List[NotebookResult], out: Path) -> None:
    """scores.csv, report.md and feedback/<student>/<assignment>.md; each file replaced atomically."""
    write_atomically(out / "scores.csv", score_table(results))
    write_atomically(out / "report.md", class_report(results))
    for r in results:
        write_atomically(out / "feedback" / safe_name(r.student) / f"{safe_name(r.assignment)}.md", notebook_report(r))
