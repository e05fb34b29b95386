"""A committee of teachers (DiverseDistill, issue 20): how many experts, how the history is
sliced for them, and how hard the filtered committee skips teachers.

Hypothesis: experts sliced where the click model differs (field:segment on a log with
data.synthetic.segments) know something the big teacher's soft labels miss, so the
committee recovers more of the gap than the teacher alone; sliced by hash they are only
weaker copies of one model. A higher threshold saves more expert passes at some AUC.
Each trial runs the five variants of the student itself (committee.baselines).
Budget: 2 expert counts × 3 slicings × 2 thresholds = 12 trials; experts are trained once
per (count, slicing) and reused across thresholds and α.
Use with a log that has segments, e.g. jobs/configs/committee.yaml.
"""

from ray import tune

SPACE = {
    "committee.experts": tune.grid_search([2, 4]),
    "committee.slice_by": tune.grid_search(["field:segment", "time", "hash"]),
    "committee.threshold": tune.grid_search([0.5, 0.8]),
}
NUM_SAMPLES = 1
