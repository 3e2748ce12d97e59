"""The networks: prompt learners, the TaI-DPT / zero-shot / image-prompt models and their scorers, losses."""
