"""SSA's group estimate (Nam et al. 2022, Sec. 3), the Table 5.4 baseline (Adebayo 2022, Sec. 5.3): on
digits with a planted tag (the spurious study's tag), the pseudo-groups recover the planted groups."""

import numpy as np
import pytest

from repair_jax.data import load_dataset
from repair_jax.errors import UserError
from repair_jax.guiding.baselines import ssa_pseudo_groups
from repair_jax.guiding.synthetic import add_tag, tag_mask_for_class


def _tagged_digits(val_size=100):
    ds = load_dataset("digits", seed=0)
    y = ds.train.y
    tag = tag_mask_for_class(y, 8, 0.9, 0)  # the spurious study's planting: most 8s tagged
    rng = np.random.default_rng(1)
    tag |= rng.uniform(size=len(y)) < 0.05  # and a few images of every class
    val_tag = rng.uniform(size=val_size) < 0.5
    x, xv = add_tag(ds.train.x, tag), add_tag(ds.pool.x[:val_size], val_tag)
    return x.reshape(len(y), -1), y, tag, xv.reshape(val_size, -1), ds.pool.y[:val_size], val_tag


def test_ssa_pseudo_groups_recover_planted_groups_from_a_small_labelled_split():
    f, y, tag, fv, yv, tv = _tagged_digits()
    groups = ssa_pseudo_groups(f, y, fv, yv, tv, num_classes=10, l2=1e-3)  # 100 labelled: the study's audit size
    assert groups.shape == y.shape and groups.dtype == np.int32
    np.testing.assert_array_equal(groups // 2, y)  # a group of the point's own class
    assert np.mean(groups == y * 2 + tag) > 0.98  # (deterministic: fixed seeds, a deterministic solver)
    minority = tag & (y != 8)
    assert np.mean(groups[minority] % 2 == 1) > 0.8  # the tagged images of the other classes found too


def test_ssa_refuses_a_bad_threshold_or_no_labelled_split():
    f, y, tag, fv, yv, tv = _tagged_digits(4)
    with pytest.raises(UserError, match="threshold"):
        ssa_pseudo_groups(f, y, fv, yv, tv, num_classes=10, threshold=0.0)
    with pytest.raises(UserError, match="validation split"):
        ssa_pseudo_groups(f, y, fv[:0], yv[:0], tv[:0], num_classes=10)
