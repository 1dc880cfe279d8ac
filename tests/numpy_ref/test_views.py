"""Text rendering (hand-written expected strings) and the heatmap figure's contents."""

import numpy as np

from cnnlab.numpy_ref.views import Step, format_matrix, format_number, plot_steps, render_text


def test_format_matrix_aligns_columns_with_shared_decimals():
    m = [[59.0, -12.5], [0.0, 3.25]]
    assert format_matrix(m, indent="") == (" 59.00  -12.50\n  0.00    3.25")


def test_float_noise_and_negative_zero_are_not_shown():
    assert format_number(58.99999999999999) == "59"
    assert format_number(-0.0) == "0"
    assert format_number(-1e-9) == "0"
    assert format_number(1 / 3) == "0.3333"
    assert format_matrix([[0.1 + 0.2, -0.0]], indent="") == "0.3  0.0"


def test_render_text_numbers_titles_shapes_and_notes():
    text = render_text([Step("a", [[1, 2], [3, 4]], "note line"), Step("b", 2.5)])
    assert text == "[1] a  (2x2)\n    note line\n    1  2\n    3  4\n\n[2] b  (scalar)\n    2.5"


def test_figure_has_one_annotated_panel_per_step():
    steps = [
        Step("pos", [[1.0, 2.0], [3.0, 4.0]]),
        Step("signed", [[-1.5, 2.0]], highlight=(0, 0, 1, 1)),
        Step("one", 7.0),
        Step("big", np.arange(400.0).reshape(20, 20)),
    ]
    fig = plot_steps(steps, title="t", footer="f")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [
        "pos\n(2x2)",
        "signed\n(1x2)",
        "one\n(scalar)",
        "big\n(20x20)",
    ]
    assert [t.get_text() for t in panels[0].texts] == ["1", "2", "3", "4"]
    assert [t.get_text() for t in panels[1].texts] == ["-1.5", "2.0"]
    assert len(panels[1].patches) == 1  # the highlight
    assert panels[2].texts[0].get_text() == "7"
    assert len(panels[3].texts) == 0 and "too many cells" in panels[3].get_xlabel()
    assert min(t.get_fontsize() for ax in panels[:3] for t in ax.texts) >= 6
    # colour bars for the three panels with a range of values, none for the single number
    assert len(fig.axes) == len(steps) + 3
