"""Sweep layer: search-space files -> validated trials -> one Ray Tune experiment per study -> status.

``spec`` loads a search-space file, ``expand`` turns it into concrete, validated trials,
``plan`` groups them into baselines and forks, ``release`` (a Tune Searcher) starts each when it
can, ``runner`` runs the study (``lock``: one driver), ``status`` reads a study back (what each
trial left on storage: :mod:`hba_sweep.artifacts.trialfiles`); the ``run`` and ``status``
commands are :mod:`hba_sweep.cli.sweep_commands`.
"""
