"""Distribution-shift detection between a new window and the recent past (CrossAdapt).

Per window the detector keeps three kinds of histograms: the label (click / no click),
the model's predicted click probability (fixed bins), and per categorical field the
frequency of its ids. The new window is compared with the pooled histograms of the last
``history`` windows by the Jensen-Shannon divergence (scipy, base 2, so in [0, 1]).
Fields are compared on the reference's ``top_k`` ids plus one "other" bucket, so a burst
of new ids (which land in "other") counts as a shift, and the cost stays O(k) per field.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon

PRED_BINS = np.linspace(0.0, 1.0, 21)
OTHER = -1  # the key that holds a field's ids beyond the ones a profile keeps


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2) between two count vectors; 0 when either is empty."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    # scipy returns the distance, the square root of the divergence
    return float(jensenshannon(p, q, base=2) ** 2)


@dataclass
class WindowProfile:
    """What the detector remembers of one window: histograms, never rows."""

    labels: np.ndarray  # [negatives, positives]
    predictions: np.ndarray  # counts over PRED_BINS
    fields: list[Counter]  # id → count, per categorical field


def profile(labels: np.ndarray, probabilities: np.ndarray, cat: np.ndarray, keep: int = 200) -> WindowProfile:
    """A window's histograms. Per field only the ``keep`` most frequent ids are counted by
    name (the rest go to an "other" key, -1): memory is O(fields × keep) per window
    however large the vocabularies, and pooled top-k lists stay exact while k << keep."""
    pos = int((labels > 0.5).sum())
    fields = []
    for j in range(cat.shape[1]):
        ids, counts = np.unique(cat[:, j], return_counts=True)
        top = np.argsort(-counts, kind="stable")[:keep]
        c = Counter(dict(zip(ids[top].tolist(), counts[top].tolist())))
        if len(ids) > len(top):
            c[OTHER] = int(counts.sum() - counts[top].sum())
        fields.append(c)
    return WindowProfile(np.array([len(labels) - pos, pos], np.float64),
                         np.histogram(np.clip(probabilities, 0.0, 1.0), PRED_BINS)[0].astype(np.float64), fields)


@dataclass
class ShiftDetector:
    threshold: float
    history: int = 3
    top_k: int = 20
    past: deque = field(default_factory=deque)

    def score(self, new: WindowProfile) -> dict[str, Any]:
        """JS divergences of ``new`` against the pooled past, and whether it fires.

        ``js`` is the largest of the label, prediction and mean per-field divergences:
        a shift in any one of them is a shift. Nothing fires before a past exists.
        """
        if not self.past:
            return {"js": 0.0, "js_label": 0.0, "js_prediction": 0.0, "js_fields": 0.0, "js_field_max": 0.0,
                    "fired": False}
        ref_labels = sum(p.labels for p in self.past)
        ref_pred = sum(p.predictions for p in self.past)
        per_field = []
        for j, counts in enumerate(new.fields):
            ref = Counter()
            for p in self.past:
                ref.update(p.fields[j])
            top = [k for k, _ in ref.most_common(self.top_k + 1) if k != OTHER][:self.top_k]
            r = np.array([ref[k] for k in top] + [sum(ref.values()) - sum(ref[k] for k in top)], np.float64)
            c = np.array([counts.get(k, 0) for k in top] + [sum(counts.values()) - sum(counts.get(k, 0) for k in top)],
                         np.float64)
            per_field.append(js_divergence(c, r))
        out = {"js_label": js_divergence(new.labels, ref_labels),
               "js_prediction": js_divergence(new.predictions, ref_pred),
               "js_fields": float(np.mean(per_field)) if per_field else 0.0,
               "js_field_max": float(np.max(per_field)) if per_field else 0.0}
        out["js"] = max(out["js_label"], out["js_prediction"], out["js_fields"])
        out["fired"] = bool(out["js"] > self.threshold)
        return out

    def push(self, new: WindowProfile) -> None:
        """Remember ``new`` as part of the recent past (the oldest window is forgotten)."""
        self.past.append(new)
        while len(self.past) > self.history:
            self.past.popleft()

    def state(self) -> list[WindowProfile]:
        return list(self.past)

    def load(self, past: list[WindowProfile]) -> None:
        self.past = deque(past[-self.history:])
