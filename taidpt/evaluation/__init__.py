"""Evaluation: metrics, scoring loops, predictions files, ensembling, summaries and plots."""
