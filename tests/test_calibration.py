"""Tests for pruning.calibration: block-input capture, running the blocks in isolation, and the
hook statistics (compared with statistics computed directly from the linear's captured input)."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES
from conftest import windows as conftest_windows
from torch import nn
from torch.testing import assert_close

from pruning.arch import FAMILIES as ADAPTERS
from pruning.arch import block_linears, decoder_blocks
from pruning.calibration import BlockInputs, capture_block_inputs, collect_stats, run_block
from pruning.models import tiny_model

BOTH = frozenset({"sq_norm", "hessian"})


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs)
        for m in model.modules()
    )


def record_inputs(module: nn.Module) -> tuple[list[torch.Tensor], object]:
    """Our own forward hook: every input tensor the module sees."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(
        lambda mod, args, out: seen.append(args[0].detach().clone())
    )
    return seen, handle


def direct_stats(xs: list[torch.Tensor], nsamples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sq_norm_j = Σ_tokens x_j² / nsamples and H = (2/nsamples)·X Xᵀ, in float64."""
    X = torch.cat([x.reshape(-1, x.shape[-1]) for x in xs]).double()  # (tokens, in)
    return X.pow(2).sum(0) / nsamples, 2 / nsamples * X.T @ X


def assert_close_f32(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """float32 accumulation against a float64 reference: relative to the largest entry."""
    scale = float(expected.abs().max())
    assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5 * scale)


GROUPS = [
    pytest.param(
        family.name,
        group,
        id=f"{family.name}-{group[0]}",
    )
    for family in ADAPTERS
    for group in family.groups
]


@pytest.mark.parametrize(("family", "group"), GROUPS)
def test_hook_stats_equal_direct_stats_unequal_chunks(tiny, family, group):
    model, windows = tiny(family, n=7)
    block = decoder_blocks(model)[0]
    inputs = capture_block_inputs(model, windows, batch_size=3)
    assert [h.shape[0] for h in inputs.hidden] == [3, 3, 1]
    last = block_linears(model, block)[group[-1]]  # the hook sits on group[0]: check another member
    seen, handle = record_inputs(last)
    try:
        stats, _ = collect_stats(model, block, inputs, BOTH)
    finally:
        handle.remove()
    sq_norm, hessian = direct_stats(seen, nsamples=7)
    st = stats[group[0]]
    assert st.sq_norm.dtype == torch.float32 and st.hessian.dtype == torch.float32
    assert_close_f32(st.sq_norm, sq_norm)
    assert_close_f32(st.hessian, hessian)
    assert st.nsamples == 7


@pytest.mark.parametrize("family", FAMILIES)
def test_hook_stats_do_not_depend_on_the_chunking(tiny, family):
    # the running mean (rescale, then add) must give the same statistics for any batch size
    model, windows = tiny(family, n=7)
    block = decoder_blocks(model)[0]
    per_size = [
        collect_stats(model, block, capture_block_inputs(model, windows, batch_size=bs), BOTH)[0]
        for bs in (1, 3, 7)
    ]
    for stats in per_size[1:]:
        for name, st in stats.items():
            assert st.nsamples == per_size[0][name].nsamples == 7
            assert_close(st.sq_norm, per_size[0][name].sq_norm, rtol=1e-5, atol=1e-5)
            assert_close(st.hessian, per_size[0][name].hessian, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_linears_of_a_group_share_one_stats_object(tiny, family):
    model, windows = tiny(family)
    block = decoder_blocks(model)[0]
    stats, _ = collect_stats(model, block, capture_block_inputs(model, windows, 4), BOTH)
    adapter = next(f for f in ADAPTERS if f.name == family)
    assert set(stats) == set(adapter.linear_names)
    leaders = [stats[group[0]] for group in adapter.groups]
    for group, leader in zip(adapter.groups, leaders):
        assert all(stats[name] is leader for name in group)
    assert len({id(s) for s in leaders}) == len(leaders)  # different inputs, different objects
    if family == "llama":
        assert stats["self_attn.v_proj"] is stats["self_attn.q_proj"]
        assert stats["mlp.up_proj"] is stats["mlp.gate_proj"]
        assert stats["mlp.down_proj"] is not stats["mlp.up_proj"]


def test_only_the_needed_statistics_are_collected(tiny):
    model, windows = tiny("llama")
    block = decoder_blocks(model)[0]
    inputs = capture_block_inputs(model, windows, 4)
    sq_only, _ = collect_stats(model, block, inputs, frozenset({"sq_norm"}))
    assert all(st.sq_norm is not None and st.hessian is None for st in sq_only.values())
    nothing, outputs = collect_stats(model, block, inputs, frozenset())
    assert all(st.sq_norm is None and st.hessian is None for st in nothing.values())
    assert len(outputs) == len(inputs.hidden)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_hooks_left_behind(tiny, family):
    model, windows = tiny(family)
    assert hook_count(model) == 0
    inputs = capture_block_inputs(model, windows, 4)
    assert hook_count(model) == 0
    collect_stats(model, decoder_blocks(model)[0], inputs, BOTH)
    assert hook_count(model) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_no_hooks_left_behind_when_the_block_raises(tiny, family, monkeypatch):
    model, windows = tiny(family)
    block = decoder_blocks(model)[0]
    inputs = capture_block_inputs(model, windows, 4)
    adapter = next(f for f in ADAPTERS if f.name == family)
    # the second linear group raises: the first group's hook has already fired by then
    failing = block.get_submodule(adapter.groups[1][0])

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(failing, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        collect_stats(model, block, inputs, BOTH)
    assert hook_count(model) == 0
    monkeypatch.setattr(block, "forward", boom)  # and when the block itself fails first
    with pytest.raises(RuntimeError, match="boom"):
        collect_stats(model, block, inputs, BOTH)
    assert hook_count(model) == 0


def test_capture_lets_real_errors_through_and_removes_its_hook(tiny, monkeypatch):
    # unlike the references' Catcher, a real ValueError before block 0 is not swallowed
    model, windows = tiny("llama")

    def boom(*args, **kwargs):
        raise ValueError("real error")

    monkeypatch.setattr(model.model.embed_tokens, "forward", boom)
    with pytest.raises(ValueError, match="real error"):
        capture_block_inputs(model, windows, 4)
    assert hook_count(model) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_capture_records_every_argument(tiny, family):
    model, windows = tiny(family, n=5)
    use_cache = model.config.use_cache
    inputs = capture_block_inputs(model, windows, batch_size=2)
    assert model.config.use_cache == use_cache  # the config is left alone
    assert [h.shape for h in inputs.hidden] == [(2, 16, 32), (2, 16, 32), (1, 16, 32)]
    assert len(inputs.args) == len(inputs.kwargs) == 3
    # what block 0 really receives, recorded by our own pre-hook on a plain forward of chunk 0
    calls = []
    handle = decoder_blocks(model)[0].register_forward_pre_hook(
        lambda mod, args, kwargs: calls.append((args, dict(kwargs))), with_kwargs=True
    )
    try:
        model(input_ids=windows[:2], use_cache=False)
    finally:
        handle.remove()
    args, kwargs = calls[0]
    hidden = args[0] if args else kwargs.pop("hidden_states")
    assert torch.equal(hidden, inputs.hidden[0])
    assert set(kwargs) == set(inputs.kwargs[0])
    for key, value in kwargs.items():
        assert_same(inputs.kwargs[0][key], value)
    assert len(args[1:]) == len(inputs.args[0])
    for a, b in zip(args[1:], inputs.args[0]):
        assert_same(b, a)
    if family == "llama":
        cos, sin = inputs.kwargs[0]["position_embeddings"]
        assert cos.shape[-2] == 16 and sin.shape == cos.shape


def assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b or (a is None and b is None)


@pytest.mark.parametrize("family", FAMILIES)
def test_run_block_equals_the_models_hidden_states(_transformers_loaded, family):
    model, windows = tiny_model(family, layers=3), conftest_windows(5)
    full = model(input_ids=windows, output_hidden_states=True, use_cache=False).hidden_states
    inputs = capture_block_inputs(model, windows, batch_size=2)  # chunks 2, 2, 1
    assert_close(torch.cat(inputs.hidden), full[0])
    blocks = decoder_blocks(model)
    out0 = run_block(blocks[0], inputs)
    assert_close(torch.cat(out0), full[1])
    out1 = run_block(blocks[1], inputs.with_hidden(out0))  # block 1 fed block 0's outputs
    assert_close(torch.cat(out1), full[2])
    _, dense = collect_stats(model, blocks[0], inputs, BOTH)  # collect_stats returns the same
    assert all(torch.equal(a, b) for a, b in zip(dense, out0))


class TupleBlock(nn.Module):
    def __init__(self, as_tuple: bool):
        super().__init__()
        self.as_tuple = as_tuple
        self.proj = nn.Linear(4, 4)

    def forward(self, hidden, scale=1.0):
        out = self.proj(hidden) * scale
        return (out, None) if self.as_tuple else out


def test_run_block_handles_tuple_and_tensor_outputs():
    torch.manual_seed(0)
    hidden = [torch.randn(2, 3, 4), torch.randn(1, 3, 4)]
    inputs = BlockInputs(hidden, [(), ()], [{"scale": 2.0}, {"scale": 3.0}])
    as_tensor = TupleBlock(False)
    as_tuple = TupleBlock(True)
    as_tuple.load_state_dict(as_tensor.state_dict())
    a, b = run_block(as_tensor, inputs), run_block(as_tuple, inputs)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert_close(a[1], as_tensor.proj(hidden[1]) * 3.0)  # the kwargs of each chunk are used
