"""The card's decisions: predicted gain of layer sets under coupling, and the greedy order."""

from __future__ import annotations

import numpy as np
import pytest

from layercard.decide import predicted_gain


def _random_coupling(k: int, p: float, seed: int) -> np.ndarray:
    off = np.random.default_rng(seed).uniform(-1.0, 1.0, (k, k))
    off = (off + off.T) / 2
    off = off / np.abs(off).max() * p
    np.fill_diagonal(off, 0.0)
    return np.eye(k) + off


def test_predicted_gain_is_additive_for_decoupled_sites() -> None:
    res2 = np.array([0.5, 2.0, 0.1, 3.0, 1.2])
    rho = np.eye(5)
    for subset in ([0], [1, 3], [0, 2, 4], range(5)):
        singles = sum(predicted_gain(res2, rho, [i]) for i in subset)
        assert predicted_gain(res2, rho, subset) == pytest.approx(singles, rel=1e-12)
    assert predicted_gain(res2, rho, [3]) == pytest.approx(0.5 * 3.0, rel=1e-12)
    assert predicted_gain(res2, rho, []) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_predicted_gain_within_gershgorin_bounds(seed: int) -> None:
    k, p = 6, 0.12
    rho = _random_coupling(k, p, seed)
    res2 = np.random.default_rng(100 + seed).random(k) + 0.1
    singles = 0.5 * float(res2.sum())
    gain = predicted_gain(res2, rho, range(k))
    assert singles / (1 + (k - 1) * p) <= gain <= singles / (1 - (k - 1) * p)
    assert gain != pytest.approx(singles, rel=1e-6)  # coupling does change the prediction


def test_predicted_gain_of_redundant_sites_is_not_double_counted() -> None:
    res2 = np.array([2.0, 2.0, 1.0])
    rho = np.eye(3)
    rho[0, 1] = rho[1, 0] = 1.0  # sites 0 and 1 make the identical change
    assert predicted_gain(res2, rho, [0, 1]) == pytest.approx(predicted_gain(res2, rho, [0]))
    both = predicted_gain(res2, rho, [0, 1, 2])
    assert both == pytest.approx(predicted_gain(res2, rho, [0]) + predicted_gain(res2, rho, [2]))
    with pytest.raises(ValueError, match="repeated"):
        predicted_gain(res2, rho, [0, 0])
