"""Point the book's Binder/Colab/JupyterHub buttons at the source notebooks.

The pages are rendered from executed copies in ``book/generated/``, which are build
products and not in the repository; a reader who launches a page online should get the
parameterized source in ``notebooks/`` instead, which they can rerun.
"""

GENERATED, SOURCE = "book/generated/", "notebooks/"


def _rewrite(item):
    if isinstance(item, dict):
        return {k: (v.replace(GENERATED, SOURCE) if k == "url" and isinstance(v, str)
                    else _rewrite(v)) for k, v in item.items()}
    if isinstance(item, list):
        return [_rewrite(v) for v in item]
    return item


def _retarget(app, pagename, templatename, context, doctree):
    if "header_buttons" in context:
        context["header_buttons"] = _rewrite(context["header_buttons"])


def setup(app):
    # sphinx-book-theme adds the launch buttons at priority 501; run after it.
    app.connect("html-page-context", _retarget, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
