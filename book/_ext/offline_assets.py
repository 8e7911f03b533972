"""Serve the book's JavaScript from the book itself, so that it works offline.

Math needs MathJax; widgets need RequireJS and the ipywidgets HTML manager
(``embed-amd.js``), which renders the widget state that notebook execution
saved. By default Sphinx and myst-nb load all three from CDNs. This extension
copies them from the pinned npm packages (``npm ci`` at the repository root,
versions in ``package-lock.json``) into ``_static/offline`` of the built book,
and fails the build when a configured script is a URL or was not copied.

The paths the pages load are set in ``_config.yml`` (``mathjax_path`` and
``nb_ipywidgets_js``, both relative to ``_static``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ConfigError, ExtensionError

# destination under _static/offline -> source under node_modules
ASSETS: dict[str, str] = {
    "mathjax/LICENSE": "mathjax/LICENSE",
    "mathjax/tex-mml-chtml.js": "mathjax/es5/tex-mml-chtml.js",
    # what tex-mml-chtml.js loads on demand: its fonts, TeX extensions, the menu
    **{f"mathjax/{part}": f"mathjax/es5/{part}" for part in ("input", "output", "ui", "a11y", "sre")},
    "requirejs/require.js": "requirejs/require.js",
    # embed-amd.js and the Font Awesome files its CSS refers to
    "html-manager": "@jupyter-widgets/html-manager/dist",
    "html-manager/fontawesome-LICENSE.txt": "@fortawesome/fontawesome-free/LICENSE.txt",
}
LEAVE_OUT = shutil.ignore_patterns("*.map", "embed.js", "libembed-amd.js")


def node_modules(app: Sphinx) -> Path:
    return Path(app.confdir) / "node_modules"


def check_config(app: Sphinx, config: Config) -> None:
    """Refuse remote scripts, and a build without the npm packages."""
    scripts = [config.mathjax_path, *config.nb_ipywidgets_js]
    remote = [s for s in scripts if "://" in s or s.startswith("//")]
    if remote:
        raise ConfigError(f"the book must serve its own JavaScript, but _config.yml loads {remote[0]}")
    missing = [src for src in ASSETS.values() if not (node_modules(app) / src).exists()]
    if missing:
        raise ConfigError(f"{node_modules(app) / missing[0]} is missing: run `npm ci` in {app.confdir}")


def copy_assets(app: Sphinx, exception: Exception | None) -> None:
    """Copy the vendored files into the built HTML and check every configured script is there."""
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    for dest, src in ASSETS.items():
        src, dest = node_modules(app) / src, static / "offline" / dest
        if src.is_dir():
            shutil.copytree(src, dest, ignore=LEAVE_OUT, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    for script in [app.config.mathjax_path, *app.config.nb_ipywidgets_js]:
        if not (static / script).is_file():
            raise ExtensionError(f"_config.yml loads _static/{script}, which is not in the built book")


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", check_config)
    app.connect("build-finished", copy_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
