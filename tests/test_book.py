"""The built book works in a browser with no network.

The browser test builds the book in fast mode, or takes a book that is already
built (``TRC_BOOK_HTML=_build/html``). It serves the book on 127.0.0.1 and opens
every page of ``_toc.yml`` in headless Chromium (Debian's ``chromium``, driven by
Playwright). Requests that leave 127.0.0.1 are blocked and recorded. Each page
must load with no console error and no failed or blocked request. Math must be
typeset by MathJax. Every saved slider must be drawn by the widget manager, and
every image must load.

Without Chromium, Playwright or the npm packages the test skips. CI sets
``TRC_REQUIRE_BROWSER=1`` to turn those skips into failures.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000


def skip_or_fail(reason: str) -> None:
    if os.environ.get("TRC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"TRC_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def toc_pages() -> list[str]:
    """The root and every ``file:`` of ``_toc.yml``: page paths without suffix."""
    toc = (ROOT / "_toc.yml").read_text()
    return re.findall(r"^\s*(?:root|-?\s*file):\s*(\S+)", toc, flags=re.MULTILINE)


# -- the book's sources, the offline guard of its build, the notebooks' fast switch ---

def test_every_notebook_is_a_chapter():
    notebooks = {f"notebooks/{p.stem}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    missing = sorted(notebooks - set(toc_pages()))
    assert not missing, f"_toc.yml leaves out {missing}: the book would skip them silently"


def test_checked_cells_have_saved_outputs():
    """nbval compares a checked cell with its saved output, and passes when there is none."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code" and "".join(cell["source"]).startswith("# NBVAL_CHECK_OUTPUT"):
                assert cell["outputs"], f"{path.name} cell {i} is checked but saved without output"


GLUE_ROLE = re.compile(r"\{glue(?::(\w+))?\}`([^`]+)`")


def glue_keys_used(notebook: dict) -> set[str]:
    """Keys that the markdown cells paste with ``{glue}`` roles (``{glue:text}`key:.3f```, ...)."""
    keys = set()
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            for role, content in GLUE_ROLE.findall("".join(cell["source"])):
                key = content.split("::")[-1]
                keys.add(key.rsplit(":", 1)[0] if role == "text" else key)
    return keys


def glue_keys_saved(notebook: dict) -> set[str]:
    """Keys that the saved outputs hold: myst-nb's ``glue`` writes ``metadata.scrapbook.name``."""
    return {out.get("metadata", {}).get("scrapbook", {}).get("name")
            for cell in notebook["cells"] if cell["cell_type"] == "code"
            for out in cell.get("outputs", [])} - {None}


def glue_md_keys_used(notebook: dict) -> set[str]:
    """Keys that the markdown cells paste as markdown, with ``{glue:md}``."""
    return {content.split("::")[-1] for cell in notebook["cells"] if cell["cell_type"] == "markdown"
            for role, content in GLUE_ROLE.findall("".join(cell["source"])) if role == "md"}


def glue_mimes(notebook: dict) -> dict[str, set[str]]:
    """The mime types saved for every glued key (myst-nb's prefix removed)."""
    mimes: dict[str, set[str]] = {}
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                mimes[name] = {m.removeprefix("application/papermill.record/") for m in out.get("data", {})}
    return mimes


def glue_texts(notebook: dict) -> dict[str, str]:
    """The saved ``text/plain`` of every glued key (myst-nb's mime prefix removed)."""
    texts = {}
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            for mime, value in out.get("data", {}).items() if name else ():
                if mime.endswith("text/plain"):
                    texts[name] = "".join(value) if isinstance(value, list) else value
    return texts


def test_glue_keys_are_parsed_from_roles_and_outputs():
    markdown = {"cell_type": "markdown", "source": ["cost {glue:text}`ch_cost:.3f`, ", "{glue}`ch_fig`"]}
    glued = {"cell_type": "code", "source": "", "outputs": [
        {"output_type": "display_data", "metadata": {"scrapbook": {"name": "ch_cost", "mime_prefix": ""}},
         "data": {"application/papermill.record/text/plain": "1.0"}}]}
    notebook = {"cells": [markdown, glued]}
    assert glue_keys_used(notebook) == {"ch_cost", "ch_fig"}
    assert glue_keys_used(notebook) - glue_keys_saved(notebook) == {"ch_fig"}


def test_glue_md_keys_and_their_mimes_are_parsed():
    markdown = {"cell_type": "markdown", "source": ["{glue:md}`ch_verdict` and {glue:text}`ch_cost:.1f`"]}
    glued = {"cell_type": "code", "source": "", "outputs": [
        {"output_type": "display_data", "metadata": {"scrapbook": {"name": "ch_verdict", "mime_prefix": ""}},
         "data": {"application/papermill.record/text/plain": "'a plateau'"}}]}
    notebook = {"cells": [markdown, glued]}
    assert glue_md_keys_used(notebook) == {"ch_verdict"}
    assert glue_mimes(notebook) == {"ch_verdict": {"text/plain"}}


def test_every_glued_number_the_prose_uses_is_in_the_saved_outputs():
    """A number the prose pastes must exist in the executed notebook, else the book prints nothing."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        names = [out.get("metadata", {}).get("scrapbook", {}).get("name") for cell in notebook["cells"]
                 if cell["cell_type"] == "code" for out in cell.get("outputs", [])]
        repeated = sorted({n for n in names if n is not None and names.count(n) > 1})
        assert not repeated, f"{path.name}: glue keys {repeated} are glued twice (the book keeps the last)"
        missing = sorted(glue_keys_used(notebook) - glue_keys_saved(notebook))
        assert not missing, f"{path.name}: the prose pastes {missing}, which no saved output glues"
        # a number pasted with a format must be a Python literal: "np.float64(1.2)" fails to format
        for key, text in glue_texts(notebook).items():
            if key in glue_keys_used(notebook) and text.startswith(("np.", "tensor(", "array(")):
                pytest.fail(f"{path.name}: glue {key!r} saved {text!r}; glue a float() or int()")
        # {glue:md} pastes the text/markdown of the output; a plain str glued has only text/plain,
        # and the book would print its repr, quotes included
        mimes = glue_mimes(notebook)
        plain = sorted(k for k in glue_md_keys_used(notebook) if k in mimes and "text/markdown" not in mimes[k])
        assert not plain, f"{path.name}: {{glue:md}} pastes {plain}, glued without markdown; glue Markdown(...)"


def test_every_citation_is_in_the_bibliography():
    """A ``{cite}`` key missing from references.bib is a build warning, and -W makes it an error."""
    known = set(re.findall(r"^@\w+\{([^,\s]+),", (ROOT / "references.bib").read_text(), flags=re.MULTILINE))
    sources = [*(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "book").glob("*.md")]
    cited = {key.strip() for path in sources
             for keys in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", path.read_text()) for key in keys.split(",")}
    assert cited, "the book cites nothing"
    assert not cited - known, f"cited but not in references.bib: {sorted(cited - known)}"
    assert "book/bibliography" in toc_pages()


def test_offline_assets_refuse_remote_scripts(tmp_path):
    pytest.importorskip("sphinx")
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        import offline_assets
    finally:
        sys.path.pop(0)
    from sphinx.errors import ConfigError

    app = SimpleNamespace(confdir=str(tmp_path))
    (tmp_path / "node_modules").mkdir()
    config = SimpleNamespace(mathjax_path="https://cdn.example/mathjax.js", nb_ipywidgets_js={})
    with pytest.raises(ConfigError, match="https://cdn.example/mathjax.js"):
        offline_assets.check_config(app, config)
    config.mathjax_path = "offline/mathjax/tex-mml-chtml.js"
    with pytest.raises(ConfigError, match="npm ci"):
        offline_assets.check_config(app, config)


def test_pick_follows_trc_fast(monkeypatch):
    from trc.book.fast import fast_mode, pick

    monkeypatch.setenv("TRC_FAST", "1")
    assert fast_mode() and pick(full=200, fast=3) == 3
    for value in ("0", ""):
        monkeypatch.setenv("TRC_FAST", value)
        assert not fast_mode() and pick(full=200, fast=3) == 200
    monkeypatch.delenv("TRC_FAST")
    assert pick(full="full", fast="fast") == "full"


# -- the browser test -------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("TRC_CHROMIUM") or shutil.which("chromium")
    if not path:
        skip_or_fail("no chromium on PATH (Debian: apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -e '.[dev]')")
    return path


@pytest.fixture(scope="module")
def book_html(chromium, tmp_path_factory) -> Path:
    """The built book: ``TRC_BOOK_HTML`` if set, else a fresh fast-mode build."""
    if os.environ.get("TRC_BOOK_HTML"):
        html = Path(os.environ["TRC_BOOK_HTML"]).resolve()
        assert (html / "index.html").is_file(), f"TRC_BOOK_HTML={html} holds no built book"
        return html
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    if not jupyter_book.exists():
        skip_or_fail("jupyter-book is not installed (pip install -e '.[book]')")
    if not (ROOT / "node_modules").is_dir():
        skip_or_fail("the book's JavaScript is not installed (npm ci)")
    out = tmp_path_factory.mktemp("book")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | {"TRC_FAST": "1"}
    run = subprocess.run([str(jupyter_book), "build", str(ROOT), "-W", "--path-output", str(out)],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, f"book build failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return out / "_build" / "html"


@pytest.fixture(scope="module")
def server(book_html):
    """The built book over HTTP on 127.0.0.1; yields its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(book_html)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    """A headless Chromium context with a fresh profile, offline but for 127.0.0.1."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")), executable_path=chromium, headless=True,
            args=CHROMIUM_FLAGS)
        context.set_default_timeout(TIMEOUT_MS)
        blocked: list[str] = []

        def route(route):
            if urlparse(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", route)
        yield SimpleNamespace(context=context, blocked=blocked)
        context.close()


def displayed_models(models: dict, roots: list[str]) -> set[str]:
    """The ids of the widget models reachable from ``roots`` through ``IPY_MODEL_<id>`` references."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        model_id = stack.pop()
        if model_id in seen or model_id not in models:
            continue
        seen.add(model_id)
        stack.extend(re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(models[model_id].get("state", {}))))
    return seen


def test_displayed_models_follow_references():
    models = {"a": {"state": {"children": ["IPY_MODEL_b"]}}, "b": {"state": {"layout": "IPY_MODEL_c"}},
              "c": {"state": {}}, "d": {"state": {}}}
    assert displayed_models(models, ["a"]) == {"a", "b", "c"}
    assert displayed_models(models, ["d", "missing"]) == {"d"}


def check_page(page) -> None:
    """Wait for MathJax and the widget manager, then check what they drew."""
    if page.locator(".math").count():
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
        page.evaluate("() => MathJax.startup.promise")
        assert page.locator("mjx-container").count() >= page.locator(".math").count(), \
            "MathJax left some math untypeset"
        assert page.locator("mjx-merror").count() == 0, "MathJax reports a TeX error"

    state = page.locator('script[type="application/vnd.jupyter.widget-state+json"]')
    if state.count():
        models = page.evaluate("s => JSON.parse(s.textContent).state", state.element_handle())
        view_scripts = page.locator('script[type="application/vnd.jupyter.widget-view+json"]')
        views = view_scripts.count()
        assert views, "the page saved widget state but shows no widget"
        # the manager draws each saved view into a .widget-subarea before its script
        page.wait_for_function(
            "n => document.querySelectorAll('.widget-subarea > .jupyter-widgets').length >= n", arg=views)
        # The kernel saves every widget it made, shown or not (an exercise's solution may build an
        # explorer only to call its methods); the sliders that must be drawn are those a view shows.
        shown = [json.loads(view_scripts.nth(i).text_content())["model_id"] for i in range(views)]
        sliders = [models[m] for m in displayed_models(models, shown)
                   if models[m]["model_name"].endswith("SliderModel")]
        if sliders:
            page.wait_for_selector(".widget-slider .noUi-handle")
            assert page.locator(".widget-slider").count() >= len(sliders), "a saved slider is not drawn"

    page.wait_for_load_state("networkidle")
    images = page.evaluate("() => [...document.images].map(i => [i.src, i.complete, i.naturalWidth])")
    for src, complete, width in images:
        assert complete and width > 0, f"image did not load: {src}"


@pytest.mark.browser
@pytest.mark.parametrize("page_path", toc_pages())
def test_page_renders_offline(page_path, server, browser, book_html):
    from playwright.sync_api import Error as PlaywrightError

    assert (book_html / f"{page_path}.html").is_file(), f"{page_path}.html was not built"
    page = browser.context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
    browser.blocked.clear()
    try:
        page.goto(f"{server}/{page_path}.html", wait_until="load")
        check_page(page)
    except (AssertionError, PlaywrightError) as e:
        problems.insert(0, str(e).splitlines()[0])
    finally:
        page.close()
    problems += [f"blocked request to the network: {url}" for url in browser.blocked]
    assert not problems, "\n".join(problems)
