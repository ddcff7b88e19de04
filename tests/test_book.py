"""The book: the site builds with -W, executing every chapter once (a cell that raises fails the build),
nothing of the solutions or hidden tests reaches it, it needs no network, and every page works in a real
browser (headless Chromium), where no code block is cut off at the right edge.

The build is the README's (``jupyter-book build . -W --keep-going``) into ``_build/html``, with the
execution cache, so it is quick when the chapters have not changed. Every site test shares that one build. Screenshots of a few pages are written
to ``test-artifacts/screenshots/``.
"""
from __future__ import annotations

import functools
import html
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import pytest

from book_helpers import NATS_PER_BYTE, NOTES
from grading_helpers import REPO, hidden_blocks, leaks, tool_env
from tools.student_edition import BRANCH

BIN = Path(sys.executable).parent
SITE = REPO / "_build" / "html"
CHAPTERS = sorted((REPO / "book").glob("[0-9][0-9]_*.ipynb"))
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
REPOSITORY = "transformer-course/transformer-course"  # _config.yml's repository.url
BUILD_TIMEOUT = 1500  # seconds: a cold build executes every chapter


def site_test(test):
    """A test of the built site: slow (the first one builds it, executing every chapter), and given the time."""
    return pytest.mark.slow(pytest.mark.timeout(BUILD_TIMEOUT)(test))


def toc_pages() -> list:
    """The pages of ``_toc.yml``, as paths without suffix relative to the root (``book/intro``)."""
    return re.findall(r"(?:root|file):\s*(\S+)", (REPO / "_toc.yml").read_text())


# --- the chapters execute ---------------------------------------------------------------------------

def test_every_chapter_of_the_map_is_in_the_toc():
    assert len(CHAPTERS) == 11, [c.name for c in CHAPTERS]
    pages = toc_pages()
    for chapter in CHAPTERS:
        assert f"book/{chapter.stem}" in pages, f"{chapter.name} is not in _toc.yml"


# --- the built site -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site() -> Path:
    cmd = [str(BIN / "jupyter-book"), "build", ".", "-W", "--keep-going"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=tool_env())
    assert done.returncode == 0, "the book does not build:\n" + done.stdout[-6000:] + done.stderr[-4000:]
    return SITE


@site_test
@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_chapter_executed_every_cell_without_an_error(site, chapter):
    """The build ran every code cell of the chapter, in order, and none of them raised or timed out."""
    import nbformat

    executed = nbformat.read(REPO / "_build" / "jupyter_execute" / "book" / chapter.name, as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code" and c.source.strip()]
    assert code, f"{chapter.name}: no code cells were executed"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), f"{chapter.name}: cells were skipped"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{chapter.name}: {errors[0].ename}: {errors[0].evalue}"


def test_the_leak_detector_finds_the_solutions_themselves():
    blocks = hidden_blocks()
    kinds = [kind for kind, lines in blocks if lines]
    assert kinds.count("SOLUTION") > 20 and kinds.count("HIDDEN TESTS") > 20, kinds
    found = leaks(REPO / "solutions", blocks)
    assert sum("hidden tests block" in f for f in found) > 20 and sum("solution block" in f for f in found) > 15, found


@site_test
def test_no_solution_or_hidden_test_reaches_the_site(site):
    assert not list(site.rglob("*solutions*")), "a path named after solutions/ is in the site"
    assert leaks(site, hidden_blocks()) == []


@site_test
def test_sources_are_exactly_the_pages_of_the_toc(site):
    """``_sources/`` (what the download button serves) holds the book's pages and nothing else."""
    sources = {str(p.relative_to(site / "_sources")).split(".")[0] for p in (site / "_sources").rglob("*.*")}
    assert sources == set(toc_pages())
    for page in toc_pages():
        assert (site / f"{page}.html").exists(), page


def page_text(page: Path) -> str:
    """What a reader sees of a built page: its article, without tags, scripts and styles."""
    text = page.read_text()
    article = re.search(r"<article.*?</article>", text, re.DOTALL)
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", article.group(0) if article else text, flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", "", body))


@site_test
def test_no_page_names_the_source_notes_or_states_loss_in_nats(site):
    """The text stands on its own (no page names the notes the course was written from, their files or their
    sections) and gives model loss in one unit, bits per byte."""
    problems = []
    for page in sorted(site.rglob("*.html")):
        if page.relative_to(site).parts[0].startswith("_") or page.name in ("genindex.html", "search.html"):
            continue
        text = page_text(page)
        for pattern, what in ((NOTES, "names the source notes"), (NATS_PER_BYTE, "states a loss in nats")):
            found = sorted({m.group(0) for m in pattern.finditer(text)})
            if found:
                problems.append(f"{page.relative_to(site)} {what}: {found[:4]}")
    assert problems == []


@site_test
def test_pages_load_nothing_from_the_network(site):
    """Scripts, stylesheets and images are local files, MathJax included (served from the installed
    sphinx-mathjax-offline package, not a CDN)."""
    for page in site.rglob("*.html"):
        text = page.read_text()
        for tag, attr in re.findall(r"<(script|link|img)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", text):
            if tag == "link" and not re.search(r"<link[^>]*rel=\"(stylesheet|preload)\"[^>]*" + re.escape(attr), text):
                continue
            assert not re.match(r"(https?:)?//", attr), f"{page.relative_to(site)} loads {attr}"
        if "class=\"math" in text:
            mathjax = re.search(r"<script[^>]*src=\"([^\"]*tex-[^\"]*\.js)[^\"]*\"", text)
            assert mathjax, f"{page.relative_to(site)} has mathematics but no local MathJax"
            assert (page.parent / mathjax.group(1).split("?")[0]).exists(), mathjax.group(1)


@site_test
def test_notebook_pages_have_launch_download_and_copy_buttons(site):
    page = (site / "book" / "02_self_attention.html").read_text()
    notebook = "book/02_self_attention.ipynb"
    # the launch buttons open the student edition's branch, never the instructor's main
    assert f"mybinder.org/v2/gh/{REPOSITORY}/{BRANCH}?urlpath=" in page
    assert f"colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/{notebook}" in page
    assert re.search(rf"hub/user-redirect/git-pull\?repo=[^\"]*&(amp;)?branch={BRANCH}", page)
    assert "/main" not in " ".join(re.findall(r'href="(https://(?:mybinder|colab)[^"]*)"', page))
    download = re.search(r"href=\"([^\"]*_sources/book/02_self_attention\.ipynb)\"", page)
    assert download and (site / "book" / download.group(1)).resolve().exists()
    assert "copybutton.js" in page
    # the exercises are shown as released, not executed: no outputs, stubs intact
    exercise = (site / "exercises" / "ex3_rope" / "ex3_rope.html").read_text()
    assert "NotImplementedError" in exercise and 'class="cell_output' not in exercise


# --- in a real browser ----------------------------------------------------------------------------------

def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium on this machine: `apt-get install chromium` (CI installs it) for the browser test")


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield b
        b.close()


def is_redirect(page: Path) -> bool:
    """The root ``index.html`` that Jupyter Book writes: a meta refresh to the first page."""
    target = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', page.read_text(), re.IGNORECASE)
    if target:
        assert (page.parent / target.group(1)).exists(), f"{page.name} redirects to a missing {target.group(1)}"
    return bool(target)


WAIT_FOR_MATHJAX = """async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
    const math = [...document.querySelectorAll('.math')];
    return {
        math: math.length,
        rendered: math.filter(e => e.querySelector('mjx-container') || e.tagName === 'MJX-CONTAINER').length,
        errors: document.querySelectorAll('mjx-merror').length,
        images: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
        n_images: document.images.length,
    };
}"""


# The longest line of each code block (not of an output) that the reader sees and that is wider than its block:
# the block would cut it off behind a scroll bar. Hidden inputs (hide-input) are not rendered until opened.
CLIPPED_CODE = """() => [...document.querySelectorAll('article pre')]
    .filter(e => !e.closest('.cell_output') && e.offsetParent !== null && e.innerText.trim()
                 && e.scrollWidth > e.clientWidth + 1)
    .map(e => e.innerText.split('\\n').reduce((a, l) => l.length > a.length ? l : a, ''))"""


@site_test
def test_every_page_works_in_chromium(site, served, browser):
    pages = sorted(str(p.relative_to(site)) for p in site.rglob("*.html")
                   if not p.relative_to(site).parts[0].startswith("_") and not is_redirect(p))
    assert len(pages) >= len(toc_pages())
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = {"book/intro.html", "book/02_self_attention.html", "book/09_long_context.html",
             "exercises/ex3_rope/ex3_rope.html"}
    problems, total_math, total_images = [], 0, 0
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # a laptop's width
    outside = []
    context.route(re.compile(r"^(?!http://127\.0\.0\.1).*"), lambda route: (outside.append(route.request.url), route.abort()))
    for name in pages:
        page = context.new_page()
        errors = []
        page.on("console", lambda msg, errors=errors: msg.type == "error" and errors.append(msg.text))
        page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
        page.on("requestfailed", lambda req, errors=errors: errors.append(f"failed to load {req.url}"))
        page.goto(f"{served}/{quote(name)}", wait_until="load")
        state = page.evaluate(WAIT_FOR_MATHJAX)
        total_math += state["math"]
        total_images += state["n_images"]
        if errors:
            problems.append(f"{name}: console errors {errors[:3]}")
        if state["images"]:
            problems.append(f"{name}: images that did not load {state['images'][:3]}")
        if name.startswith("book/"):
            clipped = page.evaluate(CLIPPED_CODE)
            if clipped:
                problems.append(f"{name}: {len(clipped)} code blocks wider than the page, e.g. {clipped[0]!r}")
        if state["rendered"] < state["math"] or state["errors"]:
            problems.append(f"{name}: {state['math'] - state['rendered']} formulas not rendered, {state['errors']} TeX errors")
        if name in shots:
            page.screenshot(path=str(SCREENSHOTS / (name.replace("/", "_") + ".png")), full_page=False)
        page.close()
    assert not outside, f"pages tried to reach the network: {sorted(set(outside))[:5]}"
    assert problems == []
    assert total_math > 100 and total_images > 10, (total_math, total_images)  # the checks looked at something


@site_test
def test_search_finds_a_term(site, served, browser):
    page = browser.new_page()
    page.goto(f"{served}/search.html?q=interpolation", wait_until="load")
    page.wait_for_selector("ul.search li", timeout=30_000)
    hits = page.eval_on_selector_all("ul.search li a", "links => links.map(a => a.getAttribute('href'))")
    page.screenshot(path=str(SCREENSHOTS / "search.png"))
    page.close()
    assert any("09_long_context" in h for h in hits), hits
