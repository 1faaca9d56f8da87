"""Metrics over feature sets (FID, KID, precision/recall, density/coverage, Inception Score) and toy samples."""

from gankit.metrics.fid import fid, frechet_distance, gaussian_stats
from gankit.metrics.isc import inception_score
from gankit.metrics.kid import kid
from gankit.metrics.prdc import density_coverage, precision_recall
from gankit.metrics.toy import jsd_1d, mode_metrics

__all__ = ["fid", "frechet_distance", "gaussian_stats", "kid", "precision_recall",
           "density_coverage", "mode_metrics", "jsd_1d", "inception_score"]
