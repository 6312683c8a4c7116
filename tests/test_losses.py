"""Losses and heads."""
import pytest
import torch
import torch.nn.functional as F

from maskcls.errors import MaskclsError
from maskcls.loss import MaskLoss, soft_cross_entropy, soft_focal, soft_macro_f1_loss
from maskcls.models.heads import class_probs, head_layout, marginal_targets, ordinal_to_probs

torch.manual_seed(0)
LOGITS18 = torch.randn(12, 18)
LABELS = torch.arange(12) % 18
ONEHOT = F.one_hot(LABELS, 18).float()


def test_soft_cross_entropy_matches_torch_with_and_without_smoothing():
    assert soft_cross_entropy(LOGITS18, ONEHOT).item() == pytest.approx(F.cross_entropy(LOGITS18, LABELS).item(), rel=1e-5)
    assert soft_cross_entropy(LOGITS18, ONEHOT, label_smoothing=0.1).item() == pytest.approx(
        F.cross_entropy(LOGITS18, LABELS, label_smoothing=0.1).item(), rel=1e-5)


def test_class_weights_match_torch_weighted_sum():
    weights = torch.linspace(0.5, 2.0, 18)
    expected = F.cross_entropy(LOGITS18, LABELS, weight=weights, reduction="sum").item() / len(LABELS)
    assert soft_cross_entropy(LOGITS18, ONEHOT, weights).item() == pytest.approx(expected, rel=1e-5)


def test_focal_reduces_to_ce_at_gamma_zero_and_down_weights_easy_examples():
    assert soft_focal(LOGITS18, ONEHOT, gamma=0.0).item() == pytest.approx(soft_cross_entropy(LOGITS18, ONEHOT).item(), rel=1e-5)
    assert soft_focal(LOGITS18, ONEHOT, gamma=2.0).item() < soft_cross_entropy(LOGITS18, ONEHOT).item()


def test_soft_f1_is_zero_for_perfect_and_high_for_wrong_predictions():
    assert soft_macro_f1_loss(ONEHOT, ONEHOT).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_macro_f1_loss(ONEHOT.roll(1, dims=1), ONEHOT).item() == pytest.approx(1.0, abs=1e-6)


def test_multi_head_probs_and_marginals():
    layout = head_layout("multi")
    logits = torch.randn(5, 8)
    probs = class_probs(logits, layout)
    assert probs.shape == (5, 18) and torch.allclose(probs.sum(1), torch.ones(5))
    marginals = marginal_targets(probs)
    assert torch.allclose(marginals["mask"], F.softmax(logits[:, :3], 1), atol=1e-6)
    assert torch.allclose(marginals["age"], F.softmax(logits[:, 5:], 1), atol=1e-6)


def test_multi_head_ce_is_sum_of_head_ces():
    layout = head_layout("multi")
    logits = torch.randn(12, 8)
    mask, gender, age = LABELS // 6, (LABELS // 3) % 2, LABELS % 3
    expected = F.cross_entropy(logits[:, :3], mask) + 2 * F.cross_entropy(logits[:, 3:5], gender) + F.cross_entropy(logits[:, 5:], age)
    loss = MaskLoss(layout, "ce", head_weights={"gender": 2.0})(logits, ONEHOT)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ordinal_age_probs_are_valid_and_loss_prefers_right_order():
    probs = ordinal_to_probs(torch.tensor([[5.0, -5.0], [5.0, 5.0], [-5.0, 5.0]]))
    assert torch.allclose(probs.sum(1), torch.ones(3))
    assert (probs >= 0).all()
    assert probs.argmax(1).tolist() == [1, 2, 0]
    layout = head_layout("multi", age_ordinal=True)
    target = F.one_hot(torch.tensor([2]), 18).float()  # wear/male/>=60
    right = torch.tensor([[5.0, 0, 0, 5.0, 0, 5.0, 5.0]])
    wrong = torch.tensor([[5.0, 0, 0, 5.0, 0, -5.0, -5.0]])
    criterion = MaskLoss(layout, "ce")
    assert criterion(right, target) < criterion(wrong, target)


def test_combined_loss_and_unknown_loss():
    layout = head_layout("single")
    assert MaskLoss(layout, "ce+f1")(LOGITS18, ONEHOT) > MaskLoss(layout, "ce")(LOGITS18, ONEHOT)
    with pytest.raises(MaskclsError, match=r"train.loss='dice': unknown loss 'dice'"):
        MaskLoss(layout, "dice")


def test_head_errors():
    with pytest.raises(MaskclsError, match="model.head='double'"):
        head_layout("double")
    with pytest.raises(MaskclsError, match="age_ordinal=true needs model.head=multi"):
        head_layout("single", age_ordinal=True)
