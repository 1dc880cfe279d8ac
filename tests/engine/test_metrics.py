"""Our confusion matrix, per-class metrics and evaluate() against scikit-learn and torch float64.

(torchmetrics would be a second reference, but importing it costs several seconds of the
suite's budget; scikit-learn already covers every quantity.)
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_recall_fscore_support
from torch import nn

from cnnlab.engine import confusion_matrix, evaluate, per_class_metrics, predict
from cnnlab.errors import UserError


@settings(max_examples=40)
@given(k=st.integers(2, 8), n=st.integers(1, 200), seed=st.integers(0, 2**31))
def test_confusion_and_per_class_match_sklearn(k, n, seed):
    rng = np.random.default_rng(seed)
    # some classes may never occur or never be predicted: the zero-division rules matter
    labels = rng.integers(0, max(1, k - 1), n)
    preds = np.where(rng.random(n) < 0.6, labels, rng.integers(0, k, n))
    cm = confusion_matrix(torch.from_numpy(labels), torch.from_numpy(preds), k)
    np.testing.assert_array_equal(cm.numpy(), sk_confusion(labels, preds, labels=range(k)))
    ours = per_class_metrics(cm)
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=range(k), zero_division=0)
    np.testing.assert_allclose(ours["precision"], p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["recall"], r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["f1"], f, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(ours["support"], s)


def test_confusion_matrix_rejects_mismatched_inputs():
    with pytest.raises(UserError, match="matching 1-d"):
        confusion_matrix(torch.zeros(5, dtype=torch.long), torch.zeros(3, dtype=torch.long), 5)


class Affine(nn.Module):
    """A linear classifier on flattened pixels, in float64 for an exact reference."""

    def __init__(self, d, k):
        super().__init__()
        self.lin = nn.Linear(d, k).double()

    def forward(self, x):
        return self.lin(x.double().flatten(1)).float()


def test_evaluate_matches_a_float64_reference():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (37, 2, 3, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 4, (37,), generator=g)
    model = Affine(18, 4)
    mean, std = (0.4, 0.6), (0.2, 0.3)
    x = (images.double() / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 2, 1, 1)) \
        / torch.tensor(std, dtype=torch.float64).view(1, 2, 1, 1)
    ref_logits = model.lin(x.flatten(1))
    res = evaluate(model, images, labels, mean=mean, std=std, batch_size=8)
    assert res.loss == pytest.approx(F.cross_entropy(ref_logits, labels).item(), rel=1e-5)
    assert res.accuracy == pytest.approx((ref_logits.argmax(1) == labels).double().mean().item())
    assert res.num == 37 and res.confusion.shape == (4, 4)
    # test-time flip averages the logits of the image and its mirror image
    tta = predict(model, images, mean=mean, std=std, tta=True)
    ref_tta = (ref_logits + model.lin(x.flip(3).flatten(1))) / 2
    torch.testing.assert_close(tta.double(), ref_tta, atol=1e-5, rtol=0)
    # float input is taken as already normalised; the model's mode is restored
    model.train()
    torch.testing.assert_close(predict(model, x.float()), ref_logits.float(), atol=1e-5, rtol=0)
    assert model.training
    rows = res.per_class(["a", "b", "c", "d"])
    assert [r["class"] for r in rows] == ["a", "b", "c", "d"]
    assert sum(r["support"] for r in rows) == 37


def test_predict_bad_input():
    model = Affine(4, 2)
    with pytest.raises(UserError, match="mean and std"):
        predict(model, torch.zeros(2, 1, 2, 2, dtype=torch.uint8))
    with pytest.raises(UserError, match=r"\(N, C, H, W\)"):
        predict(model, torch.zeros(2, 4))
    with pytest.raises(UserError, match="3 labels for 2 images"):
        evaluate(model, torch.zeros(2, 1, 2, 2), torch.zeros(3, dtype=torch.long))
