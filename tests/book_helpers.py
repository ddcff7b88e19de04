"""The book's rules, as patterns shared by the tests of the sources (test_book_rules.py) and of the built site
(test_book.py)."""
import re

# The widest line of shown code: 80 characters fit the site's code blocks (13px, book/_static/code.css) at
# the browser test's width, which test_book.py measures on the rendered blocks themselves.
CODE_WIDTH = 80
# Names of the source material the course was written from: its files, their sections and the notes
# themselves. No reader-facing page names them. (A random seed is fine.)
NOTES = re.compile(r"\bseeds?\s*(?:file\s*)?0\d\d\b|\bseeds?/|\bnotes?\s+0\d\d\b|lecture notes|\bthe notes\b|"
                   r"\bnotes\s*§|\bseed\s*§", re.IGNORECASE)
# Model loss is stated in bits per byte everywhere.
NATS_PER_BYTE = re.compile(r"nats?\s*(?:per|/)\s*byte|nats/B\b", re.IGNORECASE)
