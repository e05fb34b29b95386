"""Student depth × width, at a varying and at a fixed dense-parameter budget
(Rec-Distill Tables 2 and 4: deeper-narrower vs shallower-wider students).

Hypothesis: at a varying budget η grows with size until the student matches the
teacher; at a fixed budget depth beats width up to a point. A tuple key ties several
config paths to one value (the fixed-budget pairs).
Budget: 3 × 4 varying (SPACE) or 4 fixed-budget shapes (FIXED_BUDGET, pick it with
--space search_spaces/student_shape.py:FIXED_BUDGET), one teacher.
"""

from ray import tune

SPACE = {
    "students.0.depth": tune.grid_search([1, 2, 3]),
    "students.0.width": tune.grid_search([16, 32, 64, 128]),
}

# DNN students of 34–39k dense parameters each (embed_dim 8, 30 field tokens of the
# synthetic log, decoupled towers of width 32). A DCNv2's cross layers grow with the
# square of the flattened input, whatever the width, so its budget is set by depth alone.
FIXED_BUDGET = {
    ("students.0.arch", "students.0.depth", "students.0.width"): tune.grid_search(
        [("dnn", 1, 128), ("dnn", 2, 90), ("dnn", 3, 75), ("dnn", 4, 66)]),
}
NUM_SAMPLES = 1
