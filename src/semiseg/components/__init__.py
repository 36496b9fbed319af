"""Pieces that methods share: EMA, pseudo-label selection, CutMix boxes and mixing, losses, memory banks.

Each is a small pure function or module with its own unit tests (how methods use them:
docs/method_interface.md and the pages in docs/methods/), so a method composes them instead of
re-implementing them.
"""
