"""Torch-free utilities every part of taidpt shares: atomic writes, folder locks, safe unpickling, path text."""
