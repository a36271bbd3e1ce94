"""Open the built book in a real headless browser and check every page.

The book built once per session by ``tests/conftest.py`` (quick profile, ``-W``) is served
from a local HTTP server on 127.0.0.1 and visited with Debian's Chromium, driven by
Playwright through its executable path (Playwright's own browser download is not used).
Every page must have: every image loaded, every internal link and anchor resolving, no
error output from an executed cell, real alt text on every figure, and no console error
from the site itself.  Requests to other origins (MathJax and fonts from a CDN) are
blocked: the test needs no network.  Screenshots of a few pages at desktop and phone
width go to ``$SITE_SCREENSHOTS`` (default: a temporary folder, printed).

Without Chromium the test is skipped, except under ``CI`` where it fails: ``.ci/run``
installs Debian's ``chromium`` package when it is missing.
"""

from __future__ import annotations

import functools
import html.parser
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import pytest

from exploding_gradients.build.pdf import NAME as PDF

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SKIPPED_PAGES = {"search.html", "genindex.html", "py-modindex.html"}
SKIPPED_DIRS = {"_static", "_sources", "_images", "_downloads", "_sphinx_design_static"}
SCREENSHOT_PAGES = {"intro": "book/intro.html", "depth": "book/generated/depth.html",
                    "causes": "book/generated/causes.html"}
WIDTHS = {"desktop": 1280, "phone": 390}
IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".gif", ".webp", ".pdf")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)"
                       r"|^\s*-{20,}\s*\n\s*\w+(Error|Exception)\b", re.MULTILINE)
REDIRECT = re.compile(r"""<meta[^>]+http-equiv=["']?refresh["']?[^>]*url=([^"'>]+)""",
                      re.IGNORECASE)


def _is_truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in {"", "0", "false", "no"}


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "Chromium is not installed (Debian: apt-get install chromium)"
        if _is_truthy(os.environ.get("CI")):
            pytest.fail(f"{reason}; .ci/run should have installed it", pytrace=False)
        pytest.skip(reason)
    return path


# --- serving the built site ---------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="module")
def site(built_book):
    """The base URL of ``_build/html`` served over HTTP on a free local port."""
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _pages(html: Path) -> list[str]:
    """Every HTML page of the book, relative to the html folder, redirects excluded."""
    pages = []
    for path in sorted(html.rglob("*.html")):
        rel = path.relative_to(html)
        if rel.parts[0] in SKIPPED_DIRS or rel.name in SKIPPED_PAGES:
            continue
        if REDIRECT.search(path.read_text(errors="replace")[:4000]):
            continue
        pages.append(rel.as_posix())
    return pages


# --- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def _new_page(browser, site: str, width: int, height: int = 900):
    """A page in a fresh context whose requests to any other origin are aborted."""
    context = browser.new_context(viewport={"width": width, "height": height})
    origin = _origin(site)

    def route(r):
        if _origin(r.request.url) == origin or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            r.abort()

    context.route("**/*", route)
    return context, context.new_page()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# Evaluated in each page once it has loaded: lazy images are made eager and awaited.
COLLECT = """async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(img => { img.loading = "eager"; });
  await Promise.all(imgs.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener("load", done); img.addEventListener("error", done);
    setTimeout(done, 10000);
  })));
  const describe = el => {
    const tag = el.tagName.toLowerCase();
    const id = el.id ? "#" + el.id : "";
    const cls = el.className && typeof el.className === "string"
      ? "." + el.className.trim().split(/\\s+/).join(".") : "";
    return tag + id + cls;
  };
  const content = document.querySelector("article.bd-article") ||
    document.querySelector("article, [role=main], main") || document.body;
  return {
    images: imgs.map(img => ({
      src: img.getAttribute("src"), url: img.currentSrc || img.src,
      alt: img.getAttribute("alt"), complete: img.complete, width: img.naturalWidth,
      inFigure: !!img.closest("figure"), inContent: content.contains(img),
    })),
    links: Array.from(document.querySelectorAll("a[href]")).map(a => ({
      href: a.getAttribute("href"), url: a.href, text: a.textContent.trim().slice(0, 60),
    })),
    errorOutputs: Array.from(document.querySelectorAll(
      ".output.traceback, .output.error, .cell_output .traceback, .cell_output .error, " +
      "#papermill-error-cell")).map(el => describe(el) + ": " +
        el.textContent.trim().slice(0, 200)),
    outputTexts: Array.from(document.querySelectorAll(".cell_output")).map(
      el => el.textContent),
    ids: Array.from(document.querySelectorAll("[id], a[name]")).map(
      el => el.id || el.getAttribute("name")),
  };
}"""


@dataclass
class PageReport:
    page: str
    images: list = field(default_factory=list)
    links: list = field(default_factory=list)
    error_outputs: list = field(default_factory=list)
    output_texts: list = field(default_factory=list)
    ids: set = field(default_factory=set)
    console_errors: list = field(default_factory=list)
    failed_requests: list = field(default_factory=list)


@pytest.fixture(scope="module")
def visited(browser, site, built_book):
    """Every page of the book, loaded once in the browser, with what was found on it."""
    pages = _pages(built_book)
    assert "book/intro.html" in pages and len(pages) >= 9, pages
    origin = _origin(site)
    context, page = _new_page(browser, site, WIDTHS["desktop"])
    reports = {}
    try:
        for name in pages:
            report = PageReport(name)

            def on_console(msg, report=report):
                url = (msg.location or {}).get("url") or ""
                if msg.type == "error" and (not url or _origin(url) == origin):
                    report.console_errors.append(f"{msg.text} (at {url or 'unknown'})")

            def on_pageerror(error, report=report):
                report.console_errors.append(f"uncaught {error.name}: {error.message}")

            def on_response(response, report=report):
                if _origin(response.url) == origin and response.status >= 400:
                    report.failed_requests.append(f"HTTP {response.status} {response.url}")

            def on_requestfailed(request, report=report):
                # net::ERR_ABORTED is a request the browser cancelled (MathJax dropping a
                # font it no longer needs), not a missing file: that one answers with an
                # HTTP error status, caught above, and a broken image is caught below.
                if _origin(request.url) == origin and request.failure != "net::ERR_ABORTED":
                    report.failed_requests.append(f"{request.failure} {request.url}")

            page.on("console", on_console)
            page.on("pageerror", on_pageerror)
            page.on("response", on_response)
            page.on("requestfailed", on_requestfailed)
            response = page.goto(site + name, wait_until="load")
            assert response is not None and response.ok, f"{name}: {response and response.status}"
            page.wait_for_load_state("networkidle")  # fonts and scripts loaded after "load"
            found = page.evaluate(COLLECT)
            page.remove_listener("console", on_console)
            page.remove_listener("pageerror", on_pageerror)
            page.remove_listener("response", on_response)
            page.remove_listener("requestfailed", on_requestfailed)
            report.images = found["images"]
            report.links = found["links"]
            report.error_outputs = found["errorOutputs"]
            report.output_texts = found["outputTexts"]
            report.ids = set(found["ids"])
            reports[name] = report
    finally:
        context.close()
    return reports


def _fail_if(problems: list[str], what: str) -> None:
    if problems:
        pytest.fail(f"{len(problems)} {what}:\n  " + "\n  ".join(problems), pytrace=False)


# --- the checks ----------------------------------------------------------------------------


def test_every_page_is_visited(visited):
    chapters = {"depth", "initialization", "activation", "learning_rate", "normalization",
                "recurrence", "causes"}
    assert {f"book/generated/{c}.html" for c in chapters} <= set(visited)
    assert {"book/intro.html", "book/references.html"} <= set(visited)


def test_every_image_loads(visited):
    problems = [f"{r.page}: <img src={img['src']!r}> did not load ({img['url']})"
                for r in visited.values() for img in r.images
                if not img["complete"] or img["width"] <= 0]
    problems += [f"{r.page}: {failure}" for r in visited.values() for failure in
                 r.failed_requests]
    _fail_if(problems, "broken images or resources")


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key == "id" or (tag == "a" and key == "name"):
                self.ids.add(value)


@functools.cache
def _fetch(url: str) -> tuple[int, str]:
    """Status and (for HTML) text of a same-origin URL."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
            kind = response.headers.get_content_type()
            return response.status, body.decode(errors="replace") if kind == "text/html" else ""
    except urllib.error.HTTPError as error:
        return error.code, ""


def _ids_of(url: str, visited: dict, site: str) -> set:
    name = url[len(site):]
    if name in visited:
        return visited[name].ids
    parser = _Ids()
    parser.feed(_fetch(url)[1])
    return parser.ids


def test_every_internal_link_resolves(visited, site, built_book):
    origin = _origin(site)
    problems = []
    for r in visited.values():
        page_url = site + r.page
        for link in r.links:
            href, url = link["href"], link["url"]
            if href.startswith(("mailto:", "javascript:", "tel:")) or _origin(url) != origin:
                continue
            target, anchor = urldefrag(url)
            if target == site + PDF and not (built_book / PDF).exists():
                continue  # printed by `make pdf`, after the site is built
            label = f"{r.page}: <a href={href!r}> ({link['text']!r})"
            status = _fetch(target)[0]
            if status != 200:
                problems.append(f"{label} -> HTTP {status} for {target}")
                continue
            if anchor and target.endswith((".html", "/")) and \
                    unquote(anchor) not in _ids_of(target, visited, site):
                where = "this page" if target == page_url else target[len(site):]
                problems.append(f"{label} -> no element with id {anchor!r} on {where}")
    # Redirect pages (the root index.html) must point at an existing page.
    for path in sorted(built_book.rglob("*.html")):
        match = REDIRECT.search(path.read_text(errors="replace")[:4000])
        if match:
            rel = path.relative_to(built_book).as_posix()
            target = urldefrag(urljoin(site + rel, match.group(1).strip()))[0]
            if _fetch(target)[0] != 200:
                problems.append(f"{rel}: redirect to {match.group(1)!r} -> not found")
    _fail_if(problems, "broken internal links")


def test_no_cell_shows_an_error(visited):
    problems = [f"{r.page}: error output {out}" for r in visited.values()
                for out in r.error_outputs]
    problems += [f"{r.page}: traceback in a cell output: "
                 f"{text[TRACEBACK.search(text).start():][:200]!r}"
                 for r in visited.values() for text in r.output_texts if TRACEBACK.search(text)]
    _fail_if(problems, "error outputs")


def test_every_figure_has_alt_text(visited):
    problems = []
    for r in visited.values():
        for img in r.images:
            if not (img["inFigure"] or img["inContent"]):
                continue
            alt = (img["alt"] or "").strip()
            if not alt:
                problems.append(f"{r.page}: <img src={img['src']!r}> has no alt text")
            elif alt.lower().endswith(IMAGE_SUFFIXES) or alt == img["src"]:
                problems.append(f"{r.page}: <img src={img['src']!r}> has a file path as alt "
                                f"text ({alt!r})")
    _fail_if(problems, "figures without alt text")


def test_no_console_errors(visited):
    problems = [f"{r.page}: {error}" for r in visited.values() for error in r.console_errors]
    _fail_if(problems, "console errors from the site")


def test_screenshots(browser, site, tmp_path_factory, capsys):
    """Full-page screenshots at desktop and phone width; no figure wider than the screen."""
    folder = Path(os.environ.get("SITE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    problems = []
    for device, width in WIDTHS.items():
        context, page = _new_page(browser, site, width)
        try:
            for label, name in SCREENSHOT_PAGES.items():
                response = page.goto(site + name, wait_until="load")
                assert response is not None and response.ok, name
                page.evaluate(COLLECT)  # makes lazy images eager and waits for them
                page.screenshot(path=str(folder / f"{label}-{device}.png"), full_page=True)
                wide = page.evaluate("""w => Array.from(document.querySelectorAll(
                    "article img")).filter(img => img.getBoundingClientRect().width > w + 1)
                    .map(img => img.getAttribute("src"))""", width)
                problems += [f"{name} at {width}px: <img src={src!r}> is wider than the screen"
                             for src in wide]
        finally:
            context.close()
    with capsys.disabled():
        print(f"\nscreenshots of the built site: {folder}")
    assert {f"{label}-{device}.png" for label in SCREENSHOT_PAGES for device in WIDTHS} <= {
        p.name for p in folder.glob("*.png")}
    _fail_if(problems, "figures wider than the screen")


# --- reading on a phone, offline -------------------------------------------------------------

# Evaluated at each width once MathJax has typeset the page.
READABILITY = """async (minFontPx) => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const article = document.querySelector("article.bd-article") || document.body;
  const skip = el => el.closest("pre, code, .cell_input, script, style, mjx-container, " +
                                "textarea, .highlight");
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  const raw = [];
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (skip(node.parentElement)) continue;
    const m = node.textContent.match(/\\\\\\(|\\\\\\[|\\$\\$|\\\\begin\\{|\\\\frac|\\\\sigma/);
    if (m) raw.push(node.textContent.trim().slice(0, 80));
  }
  const width = window.innerWidth;
  const cut = [];
  for (const table of article.querySelectorAll("table")) {
    let box = table.parentElement, scrolls = false;
    while (box && box !== article) {
      const style = getComputedStyle(box);
      if (["auto", "scroll"].includes(style.overflowX)) { scrolls = true; break; }
      box = box.parentElement;
    }
    const right = table.getBoundingClientRect().right;
    if (!scrolls && right > article.getBoundingClientRect().right + 2) {
      cut.push((table.innerText || "").trim().slice(0, 60));
    }
  }
  const small = [];
  for (const img of article.querySelectorAll("img")) {
    const src = img.getAttribute("src") || "";
    if (!src.includes("_images/") || !img.naturalWidth) continue;
    const shown = img.getBoundingClientRect().width;
    const px = minFontPx * Math.max(1, img.naturalWidth / 670) * shown / img.naturalWidth;
    if (px < (width < 600 ? 6.5 : 10)) small.push(`${src}: ${px.toFixed(1)} px`);
  }
  return {raw, cut, small, math: article.querySelectorAll("mjx-container").length,
          overflow: document.scrollingElement.scrollWidth - width};
}"""
MIN_FONT_PX = 10 * 100 / 72  # the book's smallest figure text: 10 pt at 100 dpi


@pytest.fixture(scope="module")
def readability(browser, site, built_book):
    """Every page at desktop and phone width: raw TeX, cut-off tables, figure text size."""
    reports = {}
    for device, width in WIDTHS.items():
        context, page = _new_page(browser, site, width)
        try:
            for name in _pages(built_book):
                page.goto(site + name, wait_until="load")
                page.evaluate(COLLECT)
                reports[(device, name)] = page.evaluate(READABILITY, MIN_FONT_PX)
        finally:
            context.close()
    return reports


def test_math_renders_without_network(readability):
    """MathJax comes from the site itself: no page shows raw TeX, and math pages have
    typeset math (requests to other origins are blocked in these tests)."""
    problems = [f"{name} ({device}): raw TeX {text!r}"
                for (device, name), found in readability.items() for text in found["raw"]]
    assert readability[("desktop", "book/generated/depth.html")]["math"] > 5
    _fail_if(problems, "pages with raw TeX")


def test_no_table_is_cut_off_and_no_page_scrolls_sideways(readability):
    problems = [f"{name} ({device}): table {text!r} is cut off"
                for (device, name), found in readability.items() for text in found["cut"]]
    problems += [f"{name} ({device}): the page is {found['overflow']} px wider than the screen"
                 for (device, name), found in readability.items() if found["overflow"] > 2]
    _fail_if(problems, "tables or pages wider than the screen")


def test_figure_text_is_legible_at_desktop_and_phone_width(readability):
    problems = [f"{name} ({device}): {text}"
                for (device, name), found in readability.items() for text in found["small"]]
    _fail_if(problems, "figures whose smallest text is too small to read")


def test_the_navigation_opens_on_a_phone(browser, site):
    context, page = _new_page(browser, site, WIDTHS["phone"])
    try:
        page.goto(site + "book/intro.html", wait_until="load")
        toggles = [t for t in page.query_selector_all(".primary-toggle") if t.is_visible()]
        assert toggles, "no visible navigation button at phone width"
        toggles[0].click()
        page.wait_for_selector("dialog#pst-primary-sidebar-modal[open]", timeout=5000)
        link = page.query_selector("dialog#pst-primary-sidebar-modal a[href*='depth']")
        assert link is not None and link.is_visible()
    finally:
        context.close()


# --- the interactive explorer ------------------------------------------------------------------

# What the explorer plots now: the y values of every visible trace, as Plotly holds them.
PLOTTED = """() => {
  const gd = document.getElementById("depth-explorer");
  if (!gd || !gd._fullData) return null;
  return gd._fullData.filter(t => t.visible === true)
    .map(t => Array.from(t.y, v => Number(v).toPrecision(6)).join(",")).join(";");
}"""


def test_the_depth_explorer_runs_offline_and_answers_its_controls(browser, site):
    """The explorer on the depth page loads plotly.js from the site (other origins are
    blocked), and moving its slider or picking another activation changes the data it
    plots."""
    context, page = _new_page(browser, site, WIDTHS["desktop"])
    try:
        errors = []
        page.on("pageerror", lambda error: errors.append(error.message))
        page.goto(site + "book/generated/depth.html", wait_until="load")
        page.wait_for_function("() => window.Plotly && document.querySelector("
                               "'#depth-explorer .slider-container')", timeout=20000)
        assert page.evaluate("() => Array.from(document.scripts).some(s => "
                             "(s.getAttribute('src') || '').endsWith('_static/plotly.min.js'))")
        start = page.evaluate(PLOTTED)
        assert start, "the explorer plots nothing"
        # the slider: a click at the right end of its rail moves it to the largest sigma_w
        page.locator("#depth-explorer .slider-container").evaluate(
            "el => el.scrollIntoView({block: 'center'})")  # clear of the sticky header
        rail = page.locator("#depth-explorer .slider-rail-touch-rect").bounding_box()
        page.mouse.click(rail["x"] + rail["width"] - 3, rail["y"] + rail["height"] / 2)
        page.wait_for_function(f"() => ({PLOTTED})() !== {start!r}", timeout=5000)
        moved = page.evaluate(PLOTTED)
        # the dropdown: open it and pick the second activation
        page.locator("#depth-explorer .updatemenu-header-group").click()
        page.locator("#depth-explorer .updatemenu-dropdown-button").nth(1).click()
        page.wait_for_function(f"() => ({PLOTTED})() !== {moved!r}", timeout=5000)
        assert page.evaluate(PLOTTED) not in (start, moved)
        assert not errors, errors
    finally:
        context.close()
