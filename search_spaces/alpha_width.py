"""α × student width: the demo sweep (12 trials, one teacher).

Hypothesis: narrow students gain the most from the teacher (largest η) and want a larger
α; wide students close part of the gap on their own.
Budget: 4 α × 3 widths = 12 trials over one teacher; raw students trained once per width.
"""

from ray import tune

SPACE = {
    "students.0.alpha": tune.grid_search([0.5, 1.0, 4.0, 10.0]),
    "students.0.width": tune.grid_search([16, 32, 64]),
}
NUM_SAMPLES = 1
