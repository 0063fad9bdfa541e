"""Calibration: ECE and reliability tables against hand-worked examples, temperature scaling, logits."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wrnlib.augment import normalize
from wrnlib.engine import predict_logits
from wrnlib.study.trust.calibration import ece, fit_temperature, nll, reliability


pytestmark = pytest.mark.usefixtures("one_thread")


# Four predictions over three classes, given as probabilities (logits = their logs):
#   probabilities        label  top-1 class  confidence  correct
#   (0.40, 0.30, 0.30)     0        0           0.40        yes
#   (0.20, 0.45, 0.35)     2        1           0.45        no
#   (0.70, 0.20, 0.10)     0        0           0.70        yes
#   (0.05, 0.05, 0.90)     1        2           0.90        no
PROBS = torch.tensor([[0.40, 0.30, 0.30], [0.20, 0.45, 0.35], [0.70, 0.20, 0.10], [0.05, 0.05, 0.90]])
LOGITS, LABELS = PROBS.log(), torch.tensor([0, 2, 0, 1])


def test_ece_matches_the_hand_worked_example():
    # 2 bins, [0, .5) and [.5, 1]:
    #   bin 0: confidences .40, .45 -> mean .425, accuracy 1/2; gap .075, weight 2/4
    #   bin 1: confidences .70, .90 -> mean .800, accuracy 1/2; gap .300, weight 2/4
    #   ECE = .5 * .075 + .5 * .300 = .1875
    assert ece(LOGITS, LABELS, bins=2) == pytest.approx(0.1875, abs=1e-6)
    # 4 bins, [0, .25) [.25, .5) [.5, .75) [.75, 1]:
    #   bin 1: .40, .45 -> mean .425, acc 1/2, gap .075, weight 2/4
    #   bin 2: .70       -> acc 1, gap .30, weight 1/4;  bin 3: .90 -> acc 0, gap .90, weight 1/4
    #   ECE = .0375 + .075 + .225 = .3375
    assert ece(LOGITS, LABELS, bins=4) == pytest.approx(0.3375, abs=1e-6)
    # logits, not probabilities, are what it takes: shifting a row's logits changes nothing
    assert ece(LOGITS + torch.tensor([[5.0], [-3.0], [0.0], [1.0]]), LABELS, bins=4) == pytest.approx(0.3375, abs=1e-6)


def test_reliability_table_matches_the_hand_worked_example():
    table = reliability(LOGITS, LABELS, bins=4)
    assert table.columns.tolist() == ["bin", "lower", "upper", "confidence", "accuracy", "count"]
    assert table["count"].tolist() == [0, 2, 1, 1] and table["count"].sum() == 4
    assert table["lower"].tolist() == [0, 0.25, 0.5, 0.75] and table["upper"].tolist() == [0.25, 0.5, 0.75, 1]
    assert math.isnan(table.loc[0, "confidence"]) and math.isnan(table.loc[0, "accuracy"])  # empty bin
    assert table["accuracy"].tolist()[1:] == [0.5, 1.0, 0.0]
    assert table["confidence"].tolist()[1:] == pytest.approx([0.425, 0.70, 0.90], abs=1e-6)


def test_reliability_and_ece_agree_on_many_predictions():
    gen = torch.Generator().manual_seed(0)
    logits, labels = 2 * torch.randn(500, 10, generator=gen), torch.randint(0, 10, (500,), generator=gen)
    table = reliability(logits, labels)  # 15 bins by default, like ece
    assert len(table) == 15 and table["count"].sum() == 500
    filled = table[table["count"] > 0]
    from_table = (filled["count"] / 500 * (filled["accuracy"] - filled["confidence"]).abs()).sum()
    assert from_table == pytest.approx(ece(logits, labels), abs=1e-6)


def overconfident(n: int, seed: int):
    """Logits of a 70 %-accurate 10-class classifier whose logits are 5x too large."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=gen)
    wrong = (labels + torch.randint(1, 10, (n,), generator=gen)) % 10
    predicted = torch.where(torch.rand(n, generator=gen) < 0.7, labels, wrong)
    logits = torch.rand(n, 10, generator=gen)  # in [0, 1): the +1.5 class is always the top-1
    logits[torch.arange(n), predicted] += 1.5
    return 5 * logits, labels


def test_temperature_scaling_lowers_held_out_nll_of_overconfident_logits():
    fit_logits, fit_labels = overconfident(2000, seed=0)
    val_logits, val_labels = overconfident(2000, seed=1)
    assert (val_logits.argmax(1) == val_labels).float().mean().item() == pytest.approx(0.7, abs=0.03)
    t = fit_temperature(fit_logits, fit_labels)
    assert t > 2 and fit_temperature(fit_logits, fit_labels) == t  # cools them down; deterministic
    assert nll(val_logits, val_labels, t) < 0.7 * nll(val_logits, val_labels)  # here 2.43 -> 1.41 nats
    assert ece(val_logits / t, val_labels) < 0.5 * ece(val_logits, val_labels)  # here 0.29 -> 0.11


def test_fit_temperature_recovers_a_known_temperature():
    # labels drawn from softmax(z): z is calibrated, so for the logits 3 z the best temperature is 3
    gen = torch.Generator().manual_seed(0)
    z = 2 * torch.randn(4000, 10, generator=gen)
    labels = torch.multinomial(z.softmax(1), 1, generator=gen).squeeze(1)
    assert fit_temperature(3 * z, labels) == pytest.approx(3.0, rel=0.1)
    t = fit_temperature(3 * z, labels)
    for other in (0.8 * t, 1.25 * t):  # it is the minimum of the NLL
        assert nll(3 * z, labels, t) < nll(3 * z, labels, other)
    assert nll(z, labels) == pytest.approx(nll(3 * z, labels, 3.0), abs=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="logits must be a float"):
        ece(LOGITS[0], LABELS)
    with pytest.raises(ValueError, match="labels must be an int"):
        nll(LOGITS, LABELS[:3])
    with pytest.raises(ValueError, match="temperature"):
        nll(LOGITS, LABELS, 0.0)
    with pytest.raises(ValueError, match="bins"):
        reliability(LOGITS, LABELS, bins=0)


def test_predict_logits_normalises_like_training_and_averages_mirrors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 10))
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    model.train()
    logits = predict_logits(model, images, batch_size=4)
    assert model.training  # mode restored afterwards
    model.eval()
    with torch.no_grad():
        x = normalize(images)
        plain, mirrored = model(x), model(x.flip(3))
    model.train()
    assert logits.dtype == torch.float32 and logits.shape == (6, 10) and not logits.requires_grad
    assert torch.allclose(logits, plain, atol=1e-6)  # eval mode (BN running stats) and the training normalisation
    assert torch.allclose(predict_logits(model, images, tta=True), 0.5 * (plain + mirrored), atol=1e-6)
    low = predict_logits(model, images, bf16=True)
    assert low.dtype == torch.float32 and torch.allclose(low, plain, atol=0.1)
