"""Grokking diagnostics: Softmax Collapse, alignment with naive loss minimization, StableMax and ⊥Grad.

Without regularization a classifier that fits its training set keeps growing its logits. Once the gap
between the top logit and the others exceeds what the floating-point format can resolve next to 1, the
softmax rounds to a one-hot vector: the loss and the gradient of that sample become exactly zero
(*Softmax Collapse*, SC) and learning stalls before the network generalizes. Past the point of
overfitting, the gradient also lines up with the *naive loss minimization* (NLM) direction, which only
scales the logits up; for a positively homogeneous network that direction is the weight vector θ itself.
StableMax (a softmax with linear instead of exponential growth) prevents SC; ⊥Grad removes the
gradient's component along θ. (Prieto et al. 2025, "Grokking at the Edge of Numerical Stability".)

Definitions used here:

* **absorption threshold** of a float format with machine epsilon ε: ``1 + e^{-g}`` rounds to ``1`` once
  ``e^{-g} < ε/2``, i.e. ``g > log(2/ε)`` — 7.62 (float16), 16.64 (float32), 36.74 (float64). With many
  classes near the runner-up the small terms may add up before they meet the 1, so the observed onset of
  SC lies between ``log(2/ε)`` and ``log(2(C-1)/ε)`` (measured with 113 classes: float32 16.7–19.3).
* **SC** of a sample: its logits cast to ``dtype``, the row maximum subtracted, and ``Σ exp(·) == 1``
  exactly (the measure of the reference code). It does not look at the target: a confidently wrong
  sample also collapses (its loss is then large, but its gradient still vanishes through the softmax).
* **logit gap**: top-1 minus top-2 logit of a sample; **near-SC**: gap ≥ threshold − margin (the
  samples at or close to collapse; ``near_sc_fraction ≥ sc_fraction`` up to the spread noted above).
* **NLM cosine**: ``cos(−∇L(θ), θ)`` over all trainable parameters.
* **update cosine**: ``cos(θ_{t+1} − θ_t, θ_t)`` between consecutive checkpoints.
* **feature change** (lazy-vs-rich indicator): ``1 − CKA(Φ_t, Φ_prev)``, the linear centered kernel
  alignment of the last layer's input features on a fixed subset at this and the previous checkpoint.
  Near 0: the representation is frozen (lazy / kernel regime, the head alone moves); large: features
  are being re-learned (rich regime), as during the generalizing phase of grokking.

Modules: :mod:`~probes.grokking.diagnostics` (the quantities above), :mod:`~probes.grokking.training`
(StableMax and ⊥Grad, to train with) and :mod:`~probes.grokking.probe` (the registered ``PROBE``);
every public name is re-exported here.
"""

from __future__ import annotations

from probes.grokking.diagnostics import (
    absorption_threshold,
    feature_change,
    generalization_gap,
    last_layer_features,
    linear_cka,
    logit_gap,
    logit_statistics,
    nlm_alignment,
    nlm_alignment_report,
    softmax_collapse,
    softmax_collapse_report,
    update_cosine,
    weight_norm,
)
from probes.grokking.probe import PROBE, GrokkingProbe
from probes.grokking.training import OrthoGrad, stablemax, stablemax_cross_entropy

__all__ = [
    "PROBE",
    "GrokkingProbe",
    "OrthoGrad",
    "absorption_threshold",
    "feature_change",
    "generalization_gap",
    "last_layer_features",
    "linear_cka",
    "logit_gap",
    "logit_statistics",
    "nlm_alignment",
    "nlm_alignment_report",
    "softmax_collapse",
    "softmax_collapse_report",
    "stablemax",
    "stablemax_cross_entropy",
    "update_cosine",
    "weight_norm",
]
