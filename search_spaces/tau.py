"""τ, the teacher update interval in the streaming phase (CrossAdapt's asymmetric
co-distillation): the teacher steps its optimizer every τ student batches.

Hypothesis: an interior optimum (CrossAdapt reports τ ≈ 10): τ = 1 lets the teacher chase
noise, τ = ∞ (a frozen teacher, null here) falls behind the drift.
Budget: 5 trials, 5 online teachers (τ is part of the online teacher's key).
"""

from ray import tune

SPACE = {
    "stream.enabled": True,
    "stream.teacher_update_interval": tune.grid_search([1, 5, 10, 50, None]),
}
NUM_SAMPLES = 1
