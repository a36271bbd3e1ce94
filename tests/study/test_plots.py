"""The shared plotting helpers."""

import matplotlib.pyplot as plt
import pytest

from exploding_gradients.study import plots


@pytest.mark.parametrize("span, labelled", [(3.0, True), (50.0, True), (1e4, False)])
def test_log_axis_labels_plain_ticks_over_few_decades(span, labelled):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1.0, span])
    plots.log_axis(ax)
    fig.canvas.draw()
    assert ax.get_yscale() == "log"
    texts = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    plain = [t for t in texts if "$" not in t]
    assert bool(plain) == labelled and (not labelled or "2" in plain)
    plt.close(fig)
