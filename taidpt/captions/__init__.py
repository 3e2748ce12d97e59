"""Captions as training data: class lists, templates, lemmatizing, labelling, corpora, cached features."""
