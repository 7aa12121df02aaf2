"""The app's explanatory text, kept out of the layout code."""

INTRO = """# Pruning Lab
One-shot pruning of a real language model, seen from inside. Pick a method and a sparsity (or a
preset), press **Run**, then look: which weights went (*Layer*), where in the model (*Model map*), how
two methods differ (*Compare*), in what order ROSE works (*ROSE*), and what it cost (*Perplexity*).
The default model, SmolLM2-135M-Instruct, and the default text (CPython's own documentation) ship with
the app and work offline. In **dense** statistics mode the calibration pass runs once; every further
method or sparsity re-prunes from the cached statistics in seconds.
"""

HONESTY = """### What the numbers mean, and what they do not
- **Sparsity is not speed.** The pruned weights are stored as zeros in dense matrices: an
  unstructured-sparse model is exactly as large and as slow as the dense one in plain PyTorch. Only
  structured patterns such as **2:4** can run faster, and only on GPUs and kernels that support them.
- **Perplexity** here is token-level: the evaluation text is cut into non-overlapping windows of the
  chosen length, each window's mean next-token cross-entropy is taken, and perplexity is the exponential
  of the mean over windows (the protocol of the Wanda and SparseGPT code). A different text, window
  length or tokenizer gives different numbers; compare runs only within one setting.
- **Calibration matters.** Wanda, SparseGPT, ROSE, GBLM and the refiners all look at activations of a
  few calibration windows; change the text, the number of windows or the seed and the masks change.
- **Statistics modes.** *sequential* reproduces the papers: block *i* is calibrated on the outputs of the
  already-pruned blocks before it. *dense* takes all statistics from the dense model once, which is
  what makes re-pruning interactive; its perplexities are close to, not equal to, the papers' protocol.
- **The bundled model's weights were 4-bit quantized (GGUF Q4_1)** before the app dequantized them, so
  weight histograms show the quantization grid.
- **Block error** is the relative output error ‖dense − pruned‖² / ‖dense‖² of each decoder block fed the
  dense model's inputs, on the first calibration windows. **Layer error** (model map) is
  ‖ΔW X‖² / ‖W X‖² of each linear on the dense calibration inputs, available once Hessians are cached
  (after a SparseGPT or ROSE run in dense mode).
"""

VIEW_HELP = {
    "no_scores": "Scores are recomputed from the cached dense statistics, so they are shown for "
    "dense-mode runs; a sequential run's scores came from inputs that were not kept.",
    "no_error": "The layer error needs the dense Hessians of this setting: run SparseGPT or ROSE once "
    "in dense mode, then every run of this setting gets it.",
    "compare": "Pick two runs: the diff shows weights kept by both, pruned by both, and pruned by only "
    "one of them; the agreement matrix gives the Jaccard index of the pruned sets of all runs.",
    "rose": "Run ROSE (e.g. the preset *SparseGPT vs ROSE at 70%*) and choose it under *Run on view* to "
    "see its orderings: pre-pruning losses per column and per 128-column block, the relative range ρ "
    "against the 0.5 threshold, and the processing order.",
    "gblm": "Run GBLM in dense mode (e.g. the preset *GBLM structure at 50%*) and choose it under *Run "
    "on view* to see |∇W| and its two score terms. The structure index of every run is drawn below: "
    "the spread of the per-column kept fractions against a random mask with the same per-row counts "
    "(1.0 = no more structure than chance).",
    "gblm_layer": "left, the accumulated gradient magnitude G; middle, GBLM's two score terms "
    "|W|·‖X_j‖ and α·|W|·G on one colour scale; right, kept fractions per row and column, against "
    "Wanda's mask of the same layer when a Wanda run at the same sparsity exists.",
    "refine": "Run SparseSwaps or LLM-Barber and choose it under *Run on view*: SparseSwaps shows its "
    "objective per iteration for the chosen block's layers (relative to the warm start) and the error "
    "reduction of every layer; Barber shows its swaps per layer and the block losses before and "
    "after the rebuild.",
    "rose_twin": "Run SparseGPT at the same sparsity and setting to see ROSE's error against it.",
}

# Each method in a few exact lines: idea, formula, statistics, cost, and the paper. Notation: W is a
# linear's (out × in) weight, X its calibration inputs (in × T tokens), H = 2XXᵀ/n its Hessian, and
# "the k smallest" always means exactly floor(sparsity · group size) of them (ties: lower index).
METHOD_HELP = {
    "magnitude": """**Idea.** Small weights matter least: remove the smallest |W| of the whole matrix.

**Score.** S_ij = |W_ij|; the k smallest of the matrix are pruned (per row with `group=row`; for N:M,
the N smallest of every M consecutive inputs of a row).

**Needs.** The weights only: no calibration. **Cost.** One selection over r·c scores.

**Weakness.** Blind to the inputs: a small weight on a loud input channel can matter more than a
large one on a quiet channel. *The classic baseline (Han et al. 2015 for deep nets).*""",
    "wanda": """**Idea.** A weight matters as much as the output it produces: |W_ij| times the size of
its input.

**Score.** S_ij = |W_ij| · ‖X_j‖₂ (the norm of input channel j over the calibration tokens); the k
smallest of each output row are pruned (rows are compared only with themselves).

**Needs.** ‖X_j‖², one number per input, from one forward pass. No weight update.

**Cost.** The calibration forward, then one selection per row: seconds.

*Sun, Liu, Bair, Kolter: "A Simple and Effective Pruning Approach for Large Language Models",
arXiv 2306.11695 (ICLR 2024).*""",
    "sparsegpt": """**Idea.** Optimal Brain Surgeon, made cheap: prune a weight, then move the
remaining weights of the row to absorb the error it made on the calibration outputs.

**Rule.** Columns are processed left to right. For a block of 128 columns the mask is chosen on
the current weights by the OBS score w_ij² / [H⁻¹]_jj² (the k smallest over the block's rows
jointly; N:M groups are chosen when the loop reaches them). Processing column j with H⁻¹ = UᵀU:
e = (w_j − q_j)/U_jj, later columns W[:, >j] −= e ⊗ U[j, >j], and the error added is
Σ_rows (w_j − q_j)² / U_jj² / 2.

**Needs.** H = 2XXᵀ/n per linear (c × c), dampened by 1% of its mean diagonal.

**Cost.** O(T·c²) to collect H, O(c³) to factor it, O(r·c²) for the updates.

*Frantar & Alistarh: "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot",
arXiv 2301.00774 (ICML 2023).* Walk it column by column in the stepper above.""",
    "rose": """**Idea.** SparseGPT's error depends on the order of the columns: what is pruned early
can still be compensated by every later column. So process the columns whose pruning hurts most
first, but only in layers where that loss is concentrated ("columnar" layers).

**Rule.** Pre-prune each 128-column block with the Wanda score |W|·√a; the loss of column j is the
sum of the scores it loses, a block's loss the sum over its columns. If the relative range
ρ = (max − min)/max of the block losses is above 0.5, blocks go in descending loss and, inside
each, columns in descending loss; then SparseGPT runs in that order and the weights go back to
their places. Otherwise the layer is pruned exactly as by SparseGPT.

**Needs.** As SparseGPT (a = diag(H)/2). **Cost.** SparseGPT plus two sorts.

*Su & Wang: "ROSE: Reordered SparseGPT", arXiv 2603.05878 (CPAL 2026).* N:M here moves whole
M-groups, so the mask stays N:M (the reference's N:M path fails).""",
    "gblm": """**Idea.** Add what the loss says to what the activations say: weights with large
gradients on the calibration text are kept.

**Score.** S_ij = |W_ij| · ‖X_j‖₂ + α · |W_ij| · G_ij, with G_ij = (Σ_samples g_ij²)^½ the ℓ2 norm
over calibration windows of the dense model's language-model-loss gradient; per output row, as
Wanda. α = 100 reproduces the reference's balance for the same number of windows.

**Needs.** Wanda's norms plus one forward and backward pass per window of the whole model.

**Cost.** The gradient pass (a few forward passes' worth), then Wanda's selection.

*Das, Sun, Ma, Shen: "Beyond Size: How Gradients Shape Pruning Decisions in Large Language
Models", arXiv 2311.04902.* The Gradients tab measures the structure the gradients induce.""",
    "sparseswaps": """**Idea.** Start from any mask (Wanda's by default) and improve it row by row with
the best single exchange: un-prune one weight, prune another, keeping the count.

**Rule.** A row's error is E = rᵀGr with r = w ⊙ (pruned) and G = XXᵀ; swapping pruned u back in
and kept p out changes it by exactly Δ = a_p + b_u − 2·w_p·w_u·G_pu, so the best swap of every
row is found exactly and taken while Δ < 0, until no swap helps or the cap (3 swaps per row by
default, a CPU budget; convergence takes 30–100). For N:M, swaps stay inside each group. Weights
are not updated.

**Needs.** G = XXᵀ (the Hessian up to a factor). **Cost.** Per swap O(c) to update G·r.

*Zimmer, Roux, Wagner, Hendrych, Pokutta: "SparseSwaps", arXiv 2512.10922* (no reference code: the
swap gain is derived exactly).""",
    "barber": """**Idea.** Judge a mask by the output of the whole block, not of one linear: after
a warm start prunes a block, rebuild its mask with the gradients of the block's output error.

**Rule.** For the attention sub-block, then the MLP, with the block loss
L = MSE(sparse output, dense output), score every weight by |W| · RMS over windows of ∂L/∂W (at
the dense weights). In each row, pair the pruned weights by descending score with the kept ones by
ascending score; of the n pairs where the pruned one scores higher, the k = floor(0.01 · n) best
come back and the k worst kept go, so counts (and N:M) stay exact. Weights reset to dense values.

**Needs.** Block inputs and one backward per window and sub-block. **Cost.** About a forward and
backward of the model. Sequential mode only.

*Su et al.: "LLM-Barber: Block-Aware Rebuilder for Sparsity Mask in One-Shot for Large Language
Models", arXiv 2408.10631.*""",
}

VIEW_HELP.update(
    {
        "perplexity": "Dense against pruned perplexity of every run of this session (token-level, "
        "non-overlapping windows of the evaluation text), and each block's relative output error "
        "‖dense − pruned‖²/‖dense‖² on dense inputs. The sweep prunes again at 10–90% from the "
        "cached statistics.",
        "map": "Every linear of the model (blocks down, linear types across), coloured by achieved "
        "sparsity or by its relative reconstruction error ‖ΔW X‖²/‖W X‖². Pick a cell with Block and "
        "Linear above to open it in the Layer tab.",
        "layer": "The chosen layer's mask: pooled density of the whole matrix, a full-resolution tile "
        "(N:M groups visible), the kept fraction of every row and column, and the score histogram "
        "with the cut-off.",
        "generate": "The same prompt, continued greedily by the dense model and by the pruned model of "
        "the run on view. Runs keep masks, not models, so the pruned model is built again "
        "(seconds in dense mode).",
        "learn": "An 8×16 toy layer, random, or cut from the layer on view (Block, Linear, and the Layer "
        "tab's tile corner) with its dense Hessian. Move the "
        "step slider: each step processes one column, prunes the weights its mask chose "
        "(✕), makes the error shown, and moves the columns not yet processed (the update, below). "
        "The last row compares magnitude, Wanda and SparseGPT on the same toy.",
        "export": "Downloads for the run on view: the pruned model (safetensors, tokenizer and a "
        "model card, zipped), the masks (uint8, 1 = pruned), and a report (JSON and CSV, one row "
        "per layer). The share link restores the controls, so a class can open the same setting.",
    }
)
