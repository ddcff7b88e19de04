"""Each page loads each script once.

Jupyter Book 1 adds sphinx-thebe's and sphinx-togglebutton's inline configuration scripts twice to every
page (the copy's file name is '' instead of None), and the second thebe copy re-declares a `const`: a SyntaxError in
every reader's console. This drops the repeated copies from the page's script list.
"""


def unique_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (str(getattr(script, "filename", script) or ""), tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", unique_scripts, priority=900)  # after every extension added its scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
