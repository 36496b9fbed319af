"""Pieces that methods share: EMA, pseudo-label selection, CutMix boxes and mixing, losses, memory banks.

Each is a small pure function or module with its own unit tests (methods.md §0.6-§0.8), so a
method composes them instead of re-implementing them.
"""
