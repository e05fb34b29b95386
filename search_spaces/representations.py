"""What a student reads of its teacher beyond the logit (issue 19): the teacher's stored
representations as input features (LoopFM) and their semantic IDs (TokenMinds), per level
or as prefix tokens.

Hypothesis: LoopFM's, that representations about double the transfer ratio on top of KD;
TokenMinds', that discrete codes carry most of what the dense vectors do at a fraction of
their bytes, and that prefix tokens (a fine code read under its parents) beat per-level
fields. The raw model of each trial is "representations only", its distilled twin "KD on
top"; the plain trial is the baseline of every transfer ratio (results.json's
summary.transfer_ratio).
Budget: 1 teacher (its representations and codebook are written once, in its forward
recording pass) × 5 readings = 5 trials; with --pack 5, one run.
"""

from ray import tune

_READS = ("students.0.representations.use", "students.0.representations.codes",
          "students.0.representations.code_fields")

SPACE = {
    "teacher.representations": True,
    "teacher.semantic_ids.levels": 3,
    _READS: tune.grid_search([
        ([], [], "levels"),  # plain: KD alone over the raw student
        (["user", "item", "history"], [], "levels"),  # LoopFM: the dense representations
        ([], ["user", "item"], "levels"),  # TokenMinds: one field per level
        ([], ["user", "item"], "prefix"),  # TokenMinds: the tuple of codes up to each level
        (["user", "item"], ["user", "item"], "levels"),  # codes and the dense vectors (the dual output)
    ]),
}
NUM_SAMPLES = 1
