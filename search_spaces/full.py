"""Everything that decides a student's η at once, sampled at random (or with ASHA):
α, the loss, temperature, the student's shape and its sampling.

Hypothesis: none in particular; this is the space to hand to a search algorithm when
the single-knob sweeps disagree.
Budget: 50 random trials over one teacher (nothing here changes the teacher key).
"""

from ray import tune

SPACE = {
    "students.0.alpha": tune.loguniform(0.1, 30.0),
    "distill.loss": tune.choice(["soft_ce", "kl", "mse"]),
    "distill.temperature": tune.choice([1.0, 2.0, 4.0]),
    "students.0.depth": tune.randint(1, 4),
    "students.0.width": tune.choice([16, 32, 64, 128]),
    "students.0.embed_dim": tune.choice([4, 8, 16]),
    "students.0.sampling_ratio": tune.uniform(0.1, 0.5),  # of the train split: at most the window after history
    "students.0.negative_keep_rate": tune.choice([0.25, 0.5, 1.0]),
}
NUM_SAMPLES = 50
