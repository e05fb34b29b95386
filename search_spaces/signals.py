"""How the teacher's signals are made, and where the student may use them (issue 18).

Hypothesis: soft labels from a teacher that never saw the row (crossfit) transfer more than
strictly causal forward logits, which are made by a teacher still learning, and more than
post-hoc scores of rows the teacher trained on (leaky: overconfident where it memorised);
the teacher's soft labels on rows the student has no labels for (unlabelled share 1.0)
raise η further, and a larger α helps a single-tower student more than a decoupled one.
Budget: 3 teachers (forward; crossfit:5, which trains 5; posthoc) × 2 unlabelled shares ×
3 α × 2 tower layouts = 36 trials; with --pack 12, one run per teacher.
"""

from ray import tune

SPACE = {
    "teacher.signals": tune.grid_search(["forward", "crossfit:5", "posthoc"]),
    "students.0.unlabelled.share": tune.grid_search([0.0, 1.0]),
    "students.0.alpha": tune.grid_search([1.0, 4.0, 10.0]),
    "students.0.towers": tune.grid_search(["single", "decoupled"]),
}
NUM_SAMPLES = 1
