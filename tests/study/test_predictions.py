"""A model's predictions and the tables notebook 02 shows from them, checked against values computed here by
hand."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from wrnlib import CIFAR10_MEAN
from wrnlib.study import predictions


def test_predictions_tables_from_known_predictions():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    confidence = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95, 0.5])
    p = predictions.Predictions(labels, pred, confidence)
    assert p.accuracy == pytest.approx(4 / 6) and p.errors == 2
    cm = p.confusion()
    assert cm.shape == (10, 10) and cm.sum() == 6
    assert cm[0, 0] == 1 and cm[0, 1] == 1 and cm[1, 1] == 2 and cm[2, 0] == 1 and cm[2, 2] == 1
    table = p.per_class().set_index("class")
    assert table.loc["airplane", "accuracy"] == 0.5 and table.loc["automobile", "accuracy"] == 1.0
    assert table.loc["cat", "images"] == 0 and table.loc["cat", "accuracy"] == 0.0
    shown = p.per_class_table()  # what notebook 02 displays
    assert pd.api.types.is_integer_dtype(shown["images"]) and shown["images"].tolist()[:4] == [2, 2, 2, 0]
    assert shown.loc["airplane", "accuracy (%)"] == 50.0 and shown.loc["automobile", "accuracy (%)"] == 100.0
    assert shown.to_string().splitlines()[2].split() == ["airplane", "2", "50.0"]  # a count reads as a count
    worst, titles = p.confident_errors(5)
    assert worst.tolist() == [4, 1]  # wrong ones, most confident first
    assert titles[0].startswith("bird\n→ airplane 95%")


def test_predictions_of_a_model_agree_with_its_logits(real_data):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10))
    images, labels = real_data.test_images[:50], real_data.test_labels[:50]
    p = predictions.predictions(model, images, labels, batch_size=16)
    x = (images.float() / 255 - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        [0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    probs = model(x).softmax(1)
    assert torch.equal(p.pred, probs.argmax(1))
    assert torch.allclose(p.confidence, probs.max(1).values, atol=1e-5)
