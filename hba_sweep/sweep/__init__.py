"""Sweep service: search-space files -> validated trials -> Ray Tune experiments -> status.

``spec`` loads a search-space file, ``expand`` turns it into concrete, validated trials,
``plan`` groups them into baselines and forks, ``runner`` runs them on Ray Tune, ``status``
reads an experiment back, ``cli`` registers ``run`` and ``status``.
"""
