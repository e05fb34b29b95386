from recdistill.models.features import FeatureEmbedding, FeatureSpec
from recdistill.models.ranker import Ranker

__all__ = ["FeatureEmbedding", "FeatureSpec", "Ranker"]
