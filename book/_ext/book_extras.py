"""Small Sphinx fixes for this book's pages.

- Point the Binder/Colab/JupyterHub buttons at the source notebooks: pages are rendered
  from executed copies in ``book/generated/``, which are build products and not in the
  repository; a reader launching a page online gets the parameterized source in
  ``notebooks/``, which they can rerun.  Only absolute (launch) URLs are rewritten: the
  download button must keep pointing at the executed copy shipped with the site.
- Drop duplicated script tags: Sphinx 7.4 writes inline scripts that extensions add
  after the build starts twice per page (``THEBE_JS_URL`` is then declared twice, an
  uncaught error in the browser).
- Give the theme its default colour mode ("auto") so it does not log an invalid mode.
- Serve plotly.js from the site: the interactive explorers
  (``exploding_gradients.study.explorer``) load ``_static/plotly.min.js``, copied here
  from the installed plotly package, so they work offline.
"""

import shutil
from pathlib import Path

GENERATED, SOURCE = "book/generated/", "notebooks/"


def _rewrite(item):
    if isinstance(item, dict):
        return {k: (v.replace(GENERATED, SOURCE) if k == "url" and isinstance(v, str)
                    and "://" in v else _rewrite(v)) for k, v in item.items()}
    if isinstance(item, list):
        return [_rewrite(v) for v in item]
    return item


def _retarget_launch_buttons(app, pagename, templatename, context, doctree):
    if "header_buttons" in context:
        context["header_buttons"] = _rewrite(context["header_buttons"])


def _deduplicate_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", None) or "",
               tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    if "script_files" in context:
        context["script_files"] = unique


def _default_mode(app, config):
    config.html_context.setdefault("default_mode", "auto")


def _copy_plotly(app, exception):
    """Copy plotly.min.js into the HTML site's ``_static`` once the pages are written."""
    if exception is not None or app.builder.format != "html":
        return
    from exploding_gradients.study.explorer import PLOTLY_JS, plotly_js

    static = Path(app.outdir) / "_static"
    static.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plotly_js(), static / PLOTLY_JS)


def setup(app):
    # sphinx-book-theme adds the launch buttons at priority 501; run after it.
    app.connect("html-page-context", _retarget_launch_buttons, priority=600)
    app.connect("html-page-context", _deduplicate_scripts, priority=900)
    app.connect("config-inited", _default_mode)
    app.connect("build-finished", _copy_plotly)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
