"""α, the distillation weight of the auxiliary tower.

Hypothesis: η rises with α and then falls; with the task weight left at 1 (free α,
Rec-Distill §4.3.2, not α + task = 1) the best α is above 1 for a decoupled student,
because the main tower is protected from a too-strong teacher.
Budget: 8 trials over one teacher (α does not change the teacher key).
"""

from ray import tune

SPACE = {
    "distill.form": "free_alpha",
    "students.0.alpha": tune.loguniform(0.1, 30.0),
}
NUM_SAMPLES = 8
