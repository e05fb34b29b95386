"""Sampling ratios: how much data the teacher and the student see, and negative
down-sampling of the student (with Rec-Distill's Eq. 12 debias correcting for it).

Hypothesis: a teacher trained on more data than the student transfers more
(Rec-Distill Table 7, η 64–67%); η holds under student negative down-sampling when the
teacher's logits are debiased with the student's correction.
Budget: 2 teachers × 3 student ratios × 3 negative keep rates = 18 trials, 2 teachers.
"""

from ray import tune

SPACE = {
    "teacher.sampling_ratio": tune.grid_search([0.5, 1.0]),
    # shares of the train split; the base config keeps its earliest half for the teacher alone
    "students.0.sampling_ratio": tune.grid_search([0.1, 0.25, 0.5]),
    "students.0.negative_keep_rate": tune.grid_search([0.25, 0.5, 1.0]),
}
NUM_SAMPLES = 1
