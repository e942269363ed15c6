"""The lines ``run`` keeps off the terminal go to the study's driver.log; other lines pass (no Ray started)."""

from __future__ import annotations

import io
import logging

import ray  # noqa: F401  (sets up Ray's own log handler, as in a driver)

from hba_sweep.sweep.quiet import log_path, quiet_terminal

NOISY = [
    "The `process_trial_result` operation took 0.912 s, which may be a performance bottleneck.",
    "Processing trial results took 4.8 s, which may be a performance bottleneck. Please consider reporting "
    "results less frequently to Ray Tune.",
    "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.",
    "Experiment has been interrupted, but the most recent state was saved.\nResume experiment with: "
    'Tuner.restore(path="/x", trainable=...)',
]


def test_noisy_records_go_to_the_log_file(tmp_path):
    path = log_path(str(tmp_path / "study"), "study")
    assert path == str(tmp_path / "study" / "driver.log")
    assert log_path("s3://bucket/studies/study", "study").endswith("hba_sweep_logs/study-driver.log")
    logger = logging.getLogger("ray.tune.utils.util")
    terminal = io.StringIO()
    handler = logging.StreamHandler(terminal)  # stands for Ray's terminal handler
    logging.getLogger("ray").addHandler(handler)
    with quiet_terminal(path) as route:
        for message in NOISY:
            logger.warning(message)
        logger.warning("a trial failed: keep me")
    logger.warning("after the study: The `x` operation took 9.0 s, which may be a performance bottleneck.")
    logging.getLogger("ray").removeHandler(handler)
    err = terminal.getvalue()
    assert "keep me" in err and err.count("performance bottleneck") == 1  # only the one logged after the block
    assert "Token authentication" not in err and "Tuner.restore" not in err
    written = (tmp_path / "study" / "driver.log").read_text()
    assert route.routed == 4 and all(m.splitlines()[0] in written for m in NOISY)
