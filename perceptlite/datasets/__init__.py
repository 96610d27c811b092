"""Dataset-scale work on score records: the score cache, --where queries, copying/moving selected files,
the HTML report, and agreement with human ratings (evaluation, metrics)."""
