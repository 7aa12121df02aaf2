"""Pruning Lab's figures: plain arrays, dicts and lists in, a plotly `go.Figure` out.

No torch, no gradio, no state. Masks are bool arrays with True = pruned; layer names look like
"3.self_attn.q_proj". Large matrices are pooled (mean over tiles) and everything real-valued goes
on the wire as float32, so every figure stays well under 1 MB.
"""

from .gradients import grad_heatmap, score_terms, structure_bars
from .layers import block_errors, layer_grid, model_map, perplexity_bars, sparsity_sweep
from .masks import (
    agreement_matrix,
    mask_diff,
    mask_overview,
    mask_profiles,
    mask_tile,
    score_histogram,
)
from .refine import barber_block_loss, barber_swaps, error_reduction, swap_trace
from .rose import rose_blocks, rose_columns, rose_error_ratio, rose_model, rose_order
from .stepper import stepper_compare, stepper_errors, stepper_state
from .style import KEPT, PRUNED, _layout, method_color, pool

__all__ = [
    "KEPT",
    "PRUNED",
    "_layout",
    "agreement_matrix",
    "barber_block_loss",
    "barber_swaps",
    "block_errors",
    "error_reduction",
    "grad_heatmap",
    "layer_grid",
    "mask_diff",
    "mask_overview",
    "mask_profiles",
    "mask_tile",
    "method_color",
    "model_map",
    "perplexity_bars",
    "pool",
    "rose_blocks",
    "rose_columns",
    "rose_error_ratio",
    "rose_model",
    "rose_order",
    "score_histogram",
    "score_terms",
    "sparsity_sweep",
    "stepper_compare",
    "stepper_errors",
    "stepper_state",
    "structure_bars",
    "swap_trace",
]
