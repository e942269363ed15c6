"""Sweep service: search-space files -> validated trials -> one Ray Tune experiment per study -> status.

``spec`` loads a search-space file, ``expand`` turns it into concrete, validated trials,
``plan`` groups them into baselines and forks, ``release`` (a Tune Searcher) starts each when it
can, ``runner`` runs the study (``lock``: one driver), ``trialfiles`` reads what each trial left on
storage, ``status`` reads a study back, ``cli`` registers ``run`` and ``status``.
"""
