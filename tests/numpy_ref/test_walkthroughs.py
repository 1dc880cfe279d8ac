"""Walkthrough values against PyTorch float64 and hand arithmetic, through the Python API.

Tolerance: rtol 1e-10, atol 1e-10 against PyTorch; hand-computed cells to 1e-12.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import UserError
from cnnlab.numpy_ref import conv_backward_walkthrough, residual_walkthrough
from cnnlab.numpy_ref.walkthroughs import COURSE_INPUT, COURSE_KERNEL

# The course's matrices, restated from issue 2 (not imported, so a typo there would show).
INPUT = [
    [100, 150, 200, 50, 30],
    [80, 120, 180, 255, 90],
    [40, 70, 110, 230, 200],
    [30, 60, 100, 150, 120],
    [20, 50, 80, 100, 90],
]
KERNEL = [[0.1, -0.2, 0.1], [-0.1, 0.4, 0.1], [0.2, -0.1, 0.1]]
X = [[1, 2, 1, 0], [2, 1, 0, 1], [1, 0, 2, 1], [0, 1, 2, 1]]
W = [[1, -1, 0], [0, 1, -1], [-1, 0, 1]]
DY = [[1, -1], [-1, 1]]


def close(a, ref):
    np.testing.assert_allclose(np.asarray(a, dtype=float), ref, rtol=1e-10, atol=1e-10)


def torch_residual(x, k, stride=1, padding=1, pool=2, ceil_mode=False):
    xt = torch.tensor(x, dtype=torch.float64)[None, None]
    conv = F.conv2d(
        xt, torch.tensor(k, dtype=torch.float64)[None, None], stride=stride, padding=padding
    )
    relu = F.relu(conv)
    res = F.relu(relu + xt)
    mp = F.max_pool2d(res, pool, pool, ceil_mode=ceil_mode)
    return {
        "conv": conv[0, 0].numpy(),
        "relu": relu[0, 0].numpy(),
        "residual": res[0, 0].numpy(),
        "maxpool": mp[0, 0].numpy(),
        "gap": mp.mean().item(),
    }


def test_course_defaults_are_the_issue_matrices():
    assert COURSE_INPUT == INPUT and COURSE_KERNEL == KERNEL


def test_residual_defaults_match_torch_and_hand_arithmetic():
    got = residual_walkthrough().to_json()
    assert list(got) == ["conv", "relu", "residual", "maxpool", "gap"]
    for key, ref in torch_residual(INPUT, KERNEL).items():
        close(got[key], ref)
    # first cell by hand: the padded window is [[0,0,0],[0,100,150],[0,80,120]]
    assert got["conv"][0][0] == pytest.approx(
        100 * 0.4 + 150 * 0.1 + 80 * -0.1 + 120 * 0.1, abs=1e-12
    )
    assert np.shape(got["maxpool"]) == (2, 2)  # floor: 5x5 -> 2x2
    assert got["gap"] == pytest.approx(np.mean(got["maxpool"]), rel=1e-15)


def test_residual_other_settings_match_torch():
    rng = np.random.default_rng(9)
    x, k = rng.standard_normal((6, 7)), rng.standard_normal((5, 5))
    got = residual_walkthrough(x, k, padding=2, pool=3, ceil_mode=True).to_json()
    for key, ref in torch_residual(x, k, padding=2, pool=3, ceil_mode=True).items():
        close(got[key], ref)
    assert np.shape(got["maxpool"]) == (2, 3)


def test_residual_text_shows_every_matrix_and_the_worked_cell():
    text = residual_walkthrough().text()
    for title in (
        "input X",
        "kernel K",
        "padded input",
        "conv",
        "relu",
        "skip",
        "residual",
        "max pool 2x2, stride 2",
        "global average pool",
    ):
        assert title in text
    assert "conv[0,0] = 0*0.1 + 0*(-0.2) + 0*0.1 + 0*(-0.1) + 100*0.4 + 150*0.1" in text
    assert "= 59\n" in text
    assert "floor mode" in text and "5x5 -> 2x2" in text
    assert "265.75" in text  # (242 + 380 + 117 + 324) / 4, from the torch reference above


def test_conv_backward_defaults_match_torch_autograd():
    res = conv_backward_walkthrough()
    xt = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(W, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(xt[None, None], wt[None, None])
    y.backward(torch.tensor(DY, dtype=torch.float64)[None, None])
    got = res.to_json()
    assert list(got) == ["y", "dW", "dX"]
    close(got["y"], y[0, 0].detach().numpy())
    close(got["dW"], wt.grad.numpy())
    close(got["dX"], xt.grad.numpy())
    # by hand: dW[0,0] = sum(X[0:2, 0:2] * dY) = 1 - 2 - 2 + 1
    assert got["dW"][0][0] == -2.0
    # dX[0,0] only sees dY[0,0] * W[0,0]
    assert got["dX"][0][0] == 1.0
    assert "rot180(W)" in res.text()


def test_conv_backward_other_matrices_match_torch():
    rng = np.random.default_rng(10)
    x, w, dy = rng.standard_normal((5, 6)), rng.standard_normal((2, 3)), rng.standard_normal((4, 4))
    got = conv_backward_walkthrough(x, w, dy).to_json()
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = F.conv2d(xt[None, None], wt[None, None])
    y.backward(torch.tensor(dy)[None, None])
    close(got["y"], y[0, 0].detach().numpy())
    close(got["dW"], wt.grad.numpy())
    close(got["dX"], xt.grad.numpy())


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: residual_walkthrough(stride=2),
            r"output is 3x3 but the input \(the skip\) is 5x5",
        ),
        (
            lambda: residual_walkthrough(padding=0),
            r"output is 3x3 but the input \(the skip\) is 5x5",
        ),
        (lambda: residual_walkthrough(kernel=[[[1.0]]]), "kernel must be 2-D"),
        (lambda: residual_walkthrough(input=[[1.0, np.nan]]), "NaN"),
        (lambda: residual_walkthrough(pool=9), "kernel height 9 is larger"),
        (
            lambda: conv_backward_walkthrough(dy=[[1.0]]),
            r"dL/dY must have the shape of Y = xcorr\(X, W\), 2x2",
        ),
        (
            lambda: conv_backward_walkthrough(w=np.ones((5, 5))),
            "effective kernel height 5 .* larger than the padded input height 4",
        ),
    ],
)
def test_walkthrough_errors(call, message):
    with pytest.raises(UserError, match=message):
        call()
