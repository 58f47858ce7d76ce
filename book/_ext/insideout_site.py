"""Small Sphinx fixes for the course's site, loaded through `sphinx: local_extensions:` in `_config.yml`."""

from __future__ import annotations


def dedupe_scripts(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Drop repeated inline/linked scripts from a page.

    sphinx-thebe and sphinx-togglebutton register their inline configuration scripts (`const THEBE_JS_URL = ...`)
    in an event that Sphinx 7.4 records twice, so every page declared the same `const` twice and the browser
    reported "Identifier 'THEBE_JS_URL' has already been declared". Keep the first copy of each script.
    """
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set = set()
    unique = []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        # Sphinx records the same inline script once with filename None and once with "": treat them alike.
        key = (str(getattr(script, "filename", script) or ""), attributes.get("body"), attributes.get("src"))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app) -> dict:
    app.connect("html-page-context", dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
