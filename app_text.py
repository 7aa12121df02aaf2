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
