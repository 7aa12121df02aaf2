"""Tests for pruning.masks (exact selection per layer / row / N:M) and pruning.types.Sparsity."""

from __future__ import annotations

import math

import pytest
import torch

from pruning.masks import count, fraction, is_nm, prune_lowest, prune_lowest_nm, select
from pruning.types import Sparsity


def randint_scores(*shape: int, high: int = 4, seed: int = 0) -> torch.Tensor:
    """Integer-valued float scores in [0, high): many ties."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, shape, generator=g).float()


def stable_lowest(score: torch.Tensor, k: int) -> torch.Tensor:
    """Brute force: the first k of a stable ascending argsort along the last dim are pruned."""
    order = torch.argsort(score, dim=-1, stable=True)
    pruned = torch.zeros_like(score, dtype=torch.bool)
    return pruned.scatter(-1, order[..., :k], True)


# prune_lowest: exact counts


@pytest.mark.parametrize(
    ("rows", "cols", "ratio"),
    [(4, 100, 0.29), (3, 100, 0.57), (7, 13, 0.5), (5, 10, 0.7), (1, 3, 0.34), (6, 7, 0.99)],
)
def test_prune_lowest_row_exact_count(rows, cols, ratio):
    score = torch.randn(rows, cols, generator=torch.Generator().manual_seed(1))
    pruned = prune_lowest(score, ratio, "row")
    k = math.floor(round(cols * ratio, 9))  # the decimal product, without float noise
    assert pruned.sum(-1).tolist() == [k] * rows


@pytest.mark.parametrize(
    ("rows", "cols", "ratio"),
    [(1, 100, 0.29), (10, 10, 0.29), (3, 7, 0.5), (5, 10, 0.7), (4, 25, 0.57)],
)
def test_prune_lowest_layer_exact_count(rows, cols, ratio):
    score = torch.randn(rows, cols, generator=torch.Generator().manual_seed(2))
    pruned = prune_lowest(score, ratio, "layer")
    assert int(pruned.sum()) == math.floor(round(rows * cols * ratio, 9))


def test_awkward_ratio_is_not_rounded_down_by_float_error():
    # 100 * 0.29 == 28.999999999999996 in floating point: the count must still be 29
    assert count(100, 0.29) == 29
    assert int(prune_lowest(torch.randn(1, 100), 0.29, "row").sum()) == 29
    assert int(prune_lowest(torch.randn(10, 10), 0.29, "layer").sum()) == 29
    assert count(100, 0.57) == 57  # 56.99999999999999


def test_prune_lowest_prunes_the_lowest():
    score = torch.tensor([[5.0, 1.0, 4.0, 2.0, 3.0], [0.5, 9.0, 8.0, 0.1, 7.0]])
    assert prune_lowest(score, 0.4, "row").tolist() == [
        [False, True, False, True, False],
        [True, False, False, True, False],
    ]
    # the whole matrix: the 4 lowest are 0.1, 0.5, 1, 2
    assert prune_lowest(score, 0.4, "layer").tolist() == [
        [False, True, False, True, False],
        [True, False, False, True, False],
    ]
    assert prune_lowest(score, 0.5, "layer").tolist() == [
        [False, True, False, True, True],
        [True, False, False, True, False],
    ]


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.77])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ties_go_to_the_lower_index_row(ratio, seed):
    score = randint_scores(9, 20, seed=seed)
    k = count(20, ratio)
    assert torch.equal(prune_lowest(score, ratio, "row"), stable_lowest(score, k))


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.77])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ties_go_to_the_lower_index_layer(ratio, seed):
    score = randint_scores(6, 11, seed=seed)
    k = count(66, ratio)
    expected = stable_lowest(score.flatten(), k).view(6, 11)  # row-major position order
    assert torch.equal(prune_lowest(score, ratio, "layer"), expected)


def test_all_equal_scores_prune_the_first_positions():
    pruned = prune_lowest(torch.ones(2, 5), 0.4, "row")
    assert pruned.tolist() == [[True, True, False, False, False]] * 2
    pruned = prune_lowest(torch.ones(2, 5), 0.4, "layer")
    assert pruned.tolist() == [[True, True, True, True, False], [False] * 5]


@pytest.mark.parametrize("group", ["row", "layer"])
def test_ratio_zero_prunes_nothing(group):
    pruned = prune_lowest(torch.randn(4, 9), 0.0, group)
    assert pruned.dtype == torch.bool and pruned.shape == (4, 9)
    assert not pruned.any()


@pytest.mark.parametrize("group", ["row", "layer"])
def test_prune_lowest_batched_equals_loop(group):
    score = randint_scores(3, 5, 12, high=6, seed=4)
    batched = prune_lowest(score, 0.45, group)
    assert batched.shape == score.shape
    for b in range(3):
        assert torch.equal(batched[b], prune_lowest(score[b], 0.45, group))


def test_prune_lowest_rejects_unknown_group():
    with pytest.raises(ValueError, match="column"):
        prune_lowest(torch.randn(2, 4), 0.5, "column")


# N:M


def brute_nm(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Loop over every aligned group of m: prune its n lowest (stable, ties to the lower index)."""
    pruned = torch.zeros_like(score, dtype=torch.bool)
    for row in range(score.shape[0]):
        for g0 in range(0, score.shape[1], m):
            order = score[row, g0 : g0 + m].argsort(stable=True)[:n]
            pruned[row, g0 + order] = True
    return pruned


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4), (3, 4), (1, 2), (5, 8)])
@pytest.mark.parametrize("ties", [False, True])
def test_prune_lowest_nm_matches_brute_force(n, m, ties):
    g = torch.Generator().manual_seed(n * 10 + m)
    score = randint_scores(5, 4 * m, high=3, seed=m) if ties else torch.randn(5, 4 * m, generator=g)
    pruned = prune_lowest_nm(score, n, m)
    assert torch.equal(pruned, brute_nm(score, n, m))
    assert is_nm(pruned, n, m)
    assert fraction(pruned) == n / m


def test_prune_lowest_nm_hand_case():
    score = torch.tensor([[1.0, 2, 3, 4, 8, 7, 6, 5]])
    assert prune_lowest_nm(score, 2, 4).tolist() == [
        [True, True, False, False, False, False, True, True]
    ]


def test_prune_lowest_nm_batched_equals_loop():
    score = torch.randn(2, 3, 4, 16, generator=torch.Generator().manual_seed(3))
    batched = prune_lowest_nm(score, 2, 4)
    assert batched.shape == score.shape
    for a in range(2):
        for b in range(3):
            assert torch.equal(batched[a, b], prune_lowest_nm(score[a, b], 2, 4))
    assert is_nm(batched, 2, 4)


def test_prune_lowest_nm_rejects_indivisible_inputs():
    with pytest.raises(ValueError, match="10"):
        prune_lowest_nm(torch.randn(2, 10), 2, 4)


def test_is_nm_exact():
    ok = torch.tensor([[1, 1, 0, 0, 0, 1, 0, 1]], dtype=torch.bool)
    assert is_nm(ok, 2, 4)
    assert not is_nm(ok, 1, 4)
    assert is_nm(ok, 4, 8)
    three_one = torch.tensor([[1, 1, 1, 0, 1, 0, 0, 0]], dtype=torch.bool)
    assert not is_nm(three_one, 2, 4)  # 3 + 1 is 50% overall but not 2:4
    assert is_nm(three_one, 4, 8)
    assert not is_nm(torch.zeros(2, 6, dtype=torch.bool), 0, 4)  # 6 is not a multiple of 4
    batched = torch.stack([ok, ok, ~ok])
    assert is_nm(batched, 2, 4)
    batched[1, 0, :2] = False
    assert not is_nm(batched, 2, 4)


@pytest.mark.parametrize("seed", range(3))
def test_is_nm_agrees_with_brute_force_on_random_masks(seed):
    g = torch.Generator().manual_seed(seed)
    pruned = torch.rand(6, 16, generator=g) < 0.5
    brute = all(int(pruned[r, g0 : g0 + 4].sum()) == 2 for r in range(6) for g0 in range(0, 16, 4))
    assert is_nm(pruned, 2, 4) == brute
    assert is_nm(prune_lowest_nm(torch.randn(6, 16, generator=g), 2, 4), 2, 4)


# select dispatch


def test_select_dispatches_to_nm():
    score = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 8]])
    # unstructured 50% of the row would prune 1..4; 2:4 prunes 1, 2 and 5, 6
    assert select(score, Sparsity(0.5), "row").tolist() == [[True] * 4 + [False] * 4]
    for group in ("row", "layer"):  # the group does not matter for N:M
        assert select(score, Sparsity(0.5, (2, 4)), group).tolist() == [
            [True, True, False, False, True, True, False, False]
        ]
    assert select(score, Sparsity(0.5, (4, 8))).tolist() == [[True] * 4 + [False] * 4]


@pytest.mark.parametrize("group", ["row", "layer"])
def test_select_dispatches_to_group(group):
    score = torch.tensor([[1.0, 2, 3, 4], [10, 20, 30, 40]])
    assert torch.equal(select(score, Sparsity(0.5), group), prune_lowest(score, 0.5, group))


def test_select_default_group_is_row():
    score = torch.tensor([[1.0, 2, 3, 4], [10, 20, 30, 40]])
    assert select(score, Sparsity(0.5)).sum(-1).tolist() == [2, 2]


# Sparsity


@pytest.mark.parametrize(
    ("text", "ratio", "nm"),
    [
        ("0.5", 0.5, None),
        ("50%", 0.5, None),
        (" 0.25 ", 0.25, None),
        ("70%", 0.7, None),
        ("0", 0.0, None),
        (0.6, 0.6, None),
        ("2:4", 0.5, (2, 4)),
        ("4:8", 0.5, (4, 8)),
        ("1:4", 0.25, (1, 4)),
    ],
)
def test_sparsity_parse(text, ratio, nm):
    s = Sparsity.parse(text)
    assert s.nm == nm
    assert s.ratio == pytest.approx(ratio, abs=1e-12)
    assert s == Sparsity(ratio, nm)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("abc", "'abc'"),
        ("", "''"),
        ("%", "'%'"),
        ("2:4:8", "'2:4:8'"),
        ("4:2", "'4:2'"),
        ("0:4", "'0:4'"),
        ("2:x", "'2:x'"),
        ("-2:4", "'-2:4'"),
        ("1.2", "1.2"),
        ("150%", "1.5"),
        ("-0.1", "-0.1"),
        ("nan", "nan"),
    ],
)
def test_sparsity_parse_rejects_bad_strings(text, shown):
    with pytest.raises(ValueError) as err:
        Sparsity.parse(text)
    assert shown in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"ratio": 1.2}, "1.2"),
        ({"ratio": 1.0}, "1"),
        ({"ratio": -0.1}, "-0.1"),
        ({"ratio": float("nan")}, "nan"),
        ({"ratio": 0.6, "nm": (2, 4)}, "0.6"),
        ({"ratio": 0.5, "nm": (4, 2)}, "4:2"),
        ({"ratio": 0.0, "nm": (0, 4)}, "0:4"),
        ({"ratio": 0.5, "nm": (2.0, 4.0)}, "2.0:4.0"),
    ],
)
def test_sparsity_validation(kwargs, shown):
    with pytest.raises(ValueError, match=shown.replace(".", r"\.")):
        Sparsity(**kwargs)


def test_sparsity_accepts_valid_targets():
    assert Sparsity().ratio == 0.5 and Sparsity().nm is None
    assert Sparsity(0.75, (3, 4)).nm == (3, 4)
    assert Sparsity(0.0).ratio == 0.0
    assert str(Sparsity(0.5, (2, 4))) == "2:4"
