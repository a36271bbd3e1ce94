"""Interactive explorers: values computed in the build, shown with Plotly, no kernel needed.

A page displays :func:`to_html` of a figure through ``IPython.display.HTML`` in a
``remove-input`` cell.  The HTML loads plotly.js from the site itself (:data:`PAGE_SRC`,
copied into ``_static`` by ``book/_ext/book_extras.py``), so an explorer works offline and
the page makes no request to another origin.

:func:`profile_explorer` is the per-layer explorer: the reader picks one value of a
categorical key in a dropdown (an activation) and moves a slider over a numeric key
(sigma_w); the panel shows the measured profile (median line, min-max band over seeds)
and its prediction (dashed).  Every combination is a set of traces in the figure; the
controls only switch which are visible.  Plotly is imported when a figure is made: only
the book build needs it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

#: plotly.js's file name in the site's ``_static`` folder.
PLOTLY_JS = "plotly.min.js"
#: Where a page of ``book/generated/`` finds it: the site's root is two folders up.
PAGE_SRC = f"../../_static/{PLOTLY_JS}"

_COLORS = {"measured": "#0072B2", "predicted": "#D55E00"}  # the book's Okabe-Ito colours
TRACES_PER_STATE = 4  # band top, band bottom (filled), median, prediction


def plotly_js() -> Path:
    """The plotly.min.js shipped with the installed plotly package (copied into the site)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    if not path.is_file():
        raise FileNotFoundError(f"plotly.js not found at {path}")
    return path


def _states(data: pd.DataFrame, choice: str, slider: str) -> dict:
    """{choice value: [slider values, ascending]} in the order of first appearance."""
    return {c: sorted(data.loc[data[choice] == c, slider].unique())
            for c in dict.fromkeys(data[choice])}


def profile_explorer(data: pd.DataFrame, choice: str, slider: str, notes: dict | None = None,
                     labels: dict | None = None, y_title: str = "",
                     x_title: str = "layer l (counted from the input)",
                     slider_prefix: str = "", log_y: bool = True, height: int = 560):
    """A Plotly figure: a dropdown over the values of ``choice``, a slider over those of
    ``slider``, and per state the profile against ``layer``.

    ``data`` has one row per (choice, slider, layer) with columns ``median``, ``min``,
    ``max`` (measured) and ``predicted``.  ``notes`` maps (choice value, slider value) to
    a line shown as the title of that state (e.g. the fitted factors); ``labels`` names
    the choice values in the dropdown.  Each value of ``choice`` has its own slider (the
    dropdown swaps them), which starts at the slider value nearest the middle.
    """
    import plotly.graph_objects as go

    notes, labels = notes or {}, labels or {}
    states = _states(data, choice, slider)
    keys = [(c, s) for c, values in states.items() for s in values]
    fig = go.Figure()
    for c, s in keys:
        sub = data[(data[choice] == c) & (data[slider] == s)].sort_values("layer")
        x = sub["layer"].to_numpy()
        common = {"x": x, "visible": False, "hoverinfo": "skip"}
        fig.add_trace(go.Scatter(y=sub["max"].to_numpy(), mode="lines", line={"width": 0},
                                 showlegend=False, **common))
        fig.add_trace(go.Scatter(y=sub["min"].to_numpy(), mode="lines", line={"width": 0},
                                 fill="tonexty", fillcolor="rgba(0, 114, 178, 0.2)",
                                 name="measured: min to max over seeds", **common))
        common["hoverinfo"] = "x+y"
        fig.add_trace(go.Scatter(y=sub["median"].to_numpy(), mode="lines+markers",
                                 marker={"size": 5}, line={"color": _COLORS["measured"]},
                                 name="measured: median over seeds", **common))
        fig.add_trace(go.Scatter(y=sub["predicted"].to_numpy(), mode="lines",
                                 line={"color": _COLORS["predicted"], "dash": "dash"},
                                 name="mean-field prediction", **common))

    def visible(state) -> list[bool]:
        return [k == state for k in keys for _ in range(TRACES_PER_STATE)]

    def title(state) -> dict:
        c, s = state
        head = f"{labels.get(c, c)}, {slider_prefix}{s:g}"
        note = notes.get(state)
        small = f"<br><span style='font-size:13px'>{note}</span>" if note else ""
        return {"title.text": head + small}

    start = {c: len(values) // 2 for c, values in states.items()}
    sliders = {}
    for c, values in states.items():
        sliders[c] = {
            "active": start[c], "currentvalue": {"prefix": slider_prefix},
            "pad": {"t": 60}, "len": 1.0, "x": 0.0, "y": 0.0, "yanchor": "top",
            "steps": [{"method": "update", "label": f"{s:g}",
                       "args": [{"visible": visible((c, s))}, title((c, s))]}
                      for s in values]}
    first = next(iter(states))
    buttons = [{"method": "update", "label": labels.get(c, c),
                "args": [{"visible": visible((c, states[c][start[c]]))},
                         {"sliders": [sliders[c]], **title((c, states[c][start[c]]))}]}
               for c in states]
    for i, v in enumerate(visible((first, states[first][start[first]]))):
        fig.data[i].visible = v
    fig.update_layout(
        height=height, margin={"l": 70, "r": 10, "t": 120, "b": 40},
        title={"text": title((first, states[first][start[first]]))["title.text"],
               "x": 0.01, "xanchor": "left", "y": 0.98, "yanchor": "top",
               "font": {"size": 15}},
        font={"size": 13}, template="simple_white", sliders=[sliders[first]],
        updatemenus=[{"buttons": buttons, "direction": "down", "showactive": True,
                      "x": 1.0, "xanchor": "right", "y": 1.32, "yanchor": "top"}],
        legend={"orientation": "h", "x": 0.0, "xanchor": "left", "y": 1.02,
                "yanchor": "bottom", "font": {"size": 12}, "traceorder": "normal"},
        xaxis={"title": {"text": x_title}},
        yaxis={"title": {"text": y_title}, "type": "log" if log_y else "linear",
               "exponentformat": "power"})
    return fig


def to_html(fig, src: str = PAGE_SRC, div_id: str | None = None) -> str:
    """``fig`` as an HTML fragment whose plotly.js comes from ``src`` (relative to the
    page: the site's own copy), responsive to the column's width."""
    return fig.to_html(full_html=False, include_plotlyjs=src, include_mathjax=False,
                       div_id=div_id, default_width="100%",
                       config={"responsive": True, "displayModeBar": False})
