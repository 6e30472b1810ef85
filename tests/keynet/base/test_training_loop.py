"""The training skeleton's schedule and data order."""
import numpy as np
import pytest

from keynet.base.training import LoopConfig, epoch_indices, lr_at


def test_staircase_schedule():
    loop = LoopConfig(lr=1e-3, lr_decay=0.7, decay_epochs=10, schedule="staircase")
    spe = 4001 / 32
    decay_steps = int(10 * spe)
    assert lr_at(0, loop, spe, 0) == pytest.approx(1e-3)
    assert lr_at(decay_steps - 1, loop, spe, 0) == pytest.approx(1e-3)
    assert lr_at(decay_steps, loop, spe, 0) == pytest.approx(7e-4)
    assert lr_at(2 * decay_steps, loop, spe, 0) == pytest.approx(4.9e-4)
    lin = LoopConfig(lr=1.0, schedule="linear")
    assert lr_at(0, lin, 1, 10) == 1.0 and lr_at(5, lin, 1, 10) == pytest.approx(0.5)


def test_epoch_indices_walk_all_pairs():
    a = np.concatenate([epoch_indices(10, e, 4, (0, 1000)) for e in range(5)])
    assert len(a) == 20
    assert sorted(a[:10]) == list(range(10)) and sorted(a[10:20]) == list(range(10))
    assert np.array_equal(epoch_indices(10, 3, 4, (0, 1000)), epoch_indices(10, 3, 4, (0, 1000)))
    # permutation c comes from default_rng([seed, 1000 + c])
    assert np.array_equal(epoch_indices(10, 0, 10, (7, 1000)), np.random.default_rng([7, 1000]).permutation(10))
