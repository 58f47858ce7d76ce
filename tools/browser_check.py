"""Open every page of the built site in headless Chromium and fail on anything a reader would see broken.

    python tools/browser_check.py [--site _build/html] [--chromium /usr/bin/chromium]

Serves the site on 127.0.0.1 (a free port, in a thread of this process) and drives the system's Chromium through
Playwright (`executable_path`; no browser download). For every page of `_toc.yml`, in book order, it fails on:
a failed request or an HTTP error, any request leaving 127.0.0.1 (the site must work offline), a console error or
uncaught exception, math that MathJax did not typeset (a `.math` element without `mjx-container`, a TeX error, or
raw `\\(`, `\\[`, `$$` left in the text outside code), an `<img>` that did not decode (naturalWidth 0), and a
notebook page without its Colab/Binder launch links. It saves one full-page screenshot per page under
`_build/screenshots/` and prints one line per page.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toc import ROOT, TOC, page_urls, toc_files  # noqa: E402

# Flags that work headless in a container with no network (see FACTS.md). Playwright adds --headless and its own
# temporary profile (--user-data-dir) itself.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Delimiters MathJax should have consumed: \( \) \[ \] $$, and $...$ (a dollar, non-space ... non-space, a dollar,
# on one line), which appears when markdown math reached the page unparsed.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\$[^\s$](?:[^$\n]*[^\s$\\])?\$")

# Runs in the page: the math, image and raw-TeX state after MathJax has finished.
PAGE_STATE_JS = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  for (const img of document.images) { img.loading = "eager"; }
  await Promise.all([...document.images].map(img => img.decode().catch(() => null)));
  const math = [...document.querySelectorAll(".math")];
  const untypeset = math.filter(el => !el.querySelector("mjx-container")).map(el => el.textContent.slice(0, 80));
  const merrors = [...document.querySelectorAll("mjx-merror")].map(el => el.getAttribute("data-mjx-error")
                                                                      || el.textContent.slice(0, 80));
  const images = [...document.images].map(img => ({src: img.getAttribute("src") || "", ok: img.complete
                                                   && img.naturalWidth > 0}));
  const main = (document.querySelector("main") || document.body).cloneNode(true);
  main.querySelectorAll("pre, code, script, style, textarea, mjx-container, .highlight").forEach(el => el.remove());
  const links = [...document.querySelectorAll("a[href]")].map(a => a.href);
  return {mathCount: math.length, untypeset, merrors, images, text: main.innerText, links,
          mathjax: !!(window.MathJax && MathJax.version), mathjaxVersion: window.MathJax ? MathJax.version : null};
}
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, no request log on stderr."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    """A threaded server that does not print a traceback when the browser drops a connection it no longer needs."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve `site` on a free port of 127.0.0.1 in a daemon thread; return the server and its base URL."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def screenshot_name(page: str) -> str:
    """'manual_calc/03_attention.html' -> 'manual_calc__03_attention.png'."""
    return page.removesuffix(".html").replace("/", "__") + ".png"


def raw_tex_snippets(text: str, limit: int = 3) -> list[str]:
    """Up to `limit` pieces of text around raw TeX delimiters that MathJax left untouched."""
    return [text[max(0, m.start() - 30): m.end() + 30].replace("\n", " ") for m in RAW_TEX.finditer(text)][:limit]


def page_problems(state: dict, is_notebook: bool) -> list[str]:
    """Problems found in a page's state (as returned by PAGE_STATE_JS)."""
    problems = []
    if state["mathCount"] and not state["mathjax"]:
        problems.append(f"{state['mathCount']} math elements but MathJax did not load")
    if state["untypeset"]:
        problems.append(f"{len(state['untypeset'])} of {state['mathCount']} math elements not typeset, e.g. "
                        f"{state['untypeset'][0]!r}")
    if state["merrors"]:
        problems.append(f"TeX errors: {state['merrors'][:3]}")
    for snippet in raw_tex_snippets(state["text"]):
        problems.append(f"raw TeX left in the text: ...{snippet}...")
    for image in state["images"]:
        if not image["ok"]:
            problems.append(f"image not decoded: {image['src'][:100]}")
    if is_notebook:
        for host in ("colab.research.google.com", "mybinder.org"):
            if not any(host in link for link in state["links"]):
                problems.append(f"no launch link to {host}")
    return problems


def check_site(site: Path, chromium: str, screenshots: Path, toc: Path = TOC, timeout_ms: int = 60_000) -> int:
    """Check every toc page; return the number of failing pages."""
    from playwright.sync_api import sync_playwright

    pages = page_urls(toc)
    notebooks = {f + ".html" for f in toc_files(toc) if (ROOT / (f + ".ipynb")).exists()}
    missing = [p for p in pages if not (site / p).is_file()]
    if missing:
        print(f"error: pages of _toc.yml missing from {site}: {missing} (run 'make book')", file=sys.stderr)
        return len(missing)
    screenshots.mkdir(parents=True, exist_ok=True)
    server, base = serve(site)
    host = urlparse(base).netloc
    failures = 0
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            for name in ["index.html", *pages]:
                problems: list[str] = []
                # A fresh context per page: every page is checked as a reader's first visit (empty storage).
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.on("console", lambda msg, p=problems: p.append(f"console {msg.type}: {msg.text[:200]}")
                        if msg.type == "error" else None)
                page.on("pageerror", lambda exc, p=problems: p.append(f"uncaught exception: {exc}"))
                page.on("requestfailed", lambda req, p=problems: p.append(
                    f"request failed: {req.url} ({req.failure})"))
                page.on("response", lambda resp, p=problems: p.append(f"HTTP {resp.status}: {resp.url}")
                        if resp.status >= 400 else None)
                page.on("request", lambda req, p=problems: p.append(f"request leaves the site: {req.url}")
                        if urlparse(req.url).scheme in ("http", "https", "ws", "wss")
                        and urlparse(req.url).netloc != host else None)
                start = time.perf_counter()
                state = {"mathCount": 0, "images": []}
                try:
                    page.goto(base + name, wait_until="load", timeout=timeout_ms)
                    if name == "index.html":  # the site's entry point only redirects to the landing page
                        page.wait_for_url(base + pages[0], timeout=timeout_ms)
                    else:
                        state = page.evaluate(PAGE_STATE_JS)
                        page.wait_for_load_state("networkidle", timeout=timeout_ms)
                        problems += page_problems(state, name in notebooks)
                        page.screenshot(path=str(screenshots / screenshot_name(name)), full_page=True)
                except Exception as exc:  # a timeout or a crashed page is a failure of this page, not of the run
                    problems.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                seconds = time.perf_counter() - start
                context.close()
                typeset = state["mathCount"] - len(state.get("untypeset", []))
                summary = (f"{name:<48} math {typeset}/{state['mathCount']:<4} images {len(state['images']):<3} "
                           f"{seconds:5.1f} s")
                if problems:
                    failures += 1
                    print(f"FAIL {summary}")
                    for problem in dict.fromkeys(problems):  # unique, in order
                        print(f"       - {problem}")
                else:
                    print(f"ok   {summary}")
                sys.stdout.flush()
            browser.close()
    finally:
        server.shutdown()
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "_build" / "screenshots")
    parser.add_argument("--toc", type=Path, default=TOC)
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        print(f"error: no Chromium at {args.chromium}: `apt-get install -y chromium`, or `make test SKIP_BROWSER=1` "
              "to skip only this check", file=sys.stderr)
        return 2
    if not (args.site / "index.html").is_file():
        print(f"error: no built site in {args.site}: run 'make book' first", file=sys.stderr)
        return 2
    failures = check_site(args.site.resolve(), args.chromium, args.screenshots, args.toc)
    total = len(page_urls(args.toc)) + 1
    if failures:
        print(f"browser check: {failures} of {total} pages FAILED")
        return 1
    print(f"browser check: all {total} pages ok; screenshots in {args.screenshots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
