"""The book's rules, checked on the chapters' sources (fast; the built site is checked in ``test_book.py``):

- the text stands on its own: no page names the lecture notes the course was written from;
- model loss in one unit, bits per byte;
- visible code fits the page: no line of a shown code cell is wider than ``CODE_WIDTH`` characters;
- every chapter ends with questions for the reader, and the instructors' answers (one per question, in
  ``solutions/chapter_answers/``, which never reaches the site or the student edition) are all there.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from book_helpers import CODE_WIDTH, NATS_PER_BYTE, NOTES
from grading_helpers import REPO

CHAPTERS = sorted((REPO / "book").glob("[0-9][0-9]_*.ipynb"))
PAGES = sorted((REPO / "book").glob("*.md"))
ANSWERS = REPO / "solutions" / "chapter_answers"
HIDDEN = {"hide-input", "remove-input", "remove-cell"}


def cells(path: Path):
    return nbformat.read(path, as_version=4).cells


def shown(cell) -> bool:
    return not HIDDEN & set(cell.metadata.get("tags", []))


def reader_text(path: Path) -> str:
    """What a reader of the page sees of its source: the markdown, and the code of shown cells."""
    if path.suffix == ".md":
        return path.read_text()
    return "\n".join(c.source for c in cells(path) if c.cell_type == "markdown" or shown(c))


@pytest.mark.parametrize("page", CHAPTERS + PAGES, ids=lambda p: p.name)
def test_no_page_names_the_lecture_notes(page):
    found = [m.group(0) for m in NOTES.finditer(reader_text(page))]
    assert not found, (f"{page.name} names the source notes ({found[:5]}): say what is true, and where a common "
                       "claim is wrong write 'A common claim: ... What the code shows: ...' with a citation")


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.name)
def test_model_loss_is_in_bits_per_byte(page):
    text = "\n".join(c.source for c in cells(page))
    found = sorted({m.group(0) for m in NATS_PER_BYTE.finditer(text)})
    assert not found, f"{page.name} states model loss in nats ({found}): use bits per byte (divide by ln 2)"


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.name)
def test_shown_code_fits_the_page(page):
    wide = [(i, line) for i, c in enumerate(cells(page)) if c.cell_type == "code" and shown(c)
            for line in c.source.splitlines() if len(line) > CODE_WIDTH]
    assert not wide, (f"{page.name}: {len(wide)} shown code lines are wider than {CODE_WIDTH} characters, e.g. "
                      f"cell {wide[0][0]}: {wide[0][1]!r}; wrap them, or tag figure code 'hide-input'")


def questions(page: Path) -> list:
    """The numbered items of the chapter's last section, which must be ``## Questions``."""
    markdown = "\n".join(c.source for c in cells(page) if c.cell_type == "markdown")
    sections = re.split(r"^## ", markdown, flags=re.MULTILINE)
    last = sections[-1]
    assert last.startswith("Questions"), f"{page.name}: the last section is {last.splitlines()[0]!r}, not 'Questions'"
    return re.findall(r"^\d+\.\s", last, flags=re.MULTILINE)


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.name)
def test_chapter_ends_with_questions_and_the_instructors_have_the_answers(page):
    asked = questions(page)
    assert len(asked) >= 3, f"{page.name}: {len(asked)} questions at the end; ask at least three"
    answers_file = ANSWERS / f"{page.stem}.md"
    assert answers_file.exists(), f"{page.name}: no answers for instructors in {answers_file.relative_to(REPO)}"
    answered = re.findall(r"^\d+\.\s", answers_file.read_text(), flags=re.MULTILINE)
    assert len(answered) == len(asked), f"{answers_file.name}: {len(answered)} answers for {len(asked)} questions"
