"""Active learning: which unlabelled texts to label next (`lmforge suggest`).

`scoring` holds the pure parts (uncertainty measures, the diversity step); `suggest` reads the pool,
leaves out what is already labelled, scores through the run's Predictor and writes the pre-filled
JSONL the readers accept. The studio calls `suggest.suggest` as the CLI does.
"""
