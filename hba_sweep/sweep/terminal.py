"""What a study prints while it runs: Tune's trial table, naming the experiment where Tune's table
says "Result logdir" (a staging folder in Ray's temporary session directory, not the results)."""

from __future__ import annotations

import re

from ray.tune import CLIReporter

from hba_sweep.foundation.redaction import redact


class StudyReporter(CLIReporter):
    """Tune's CLIReporter whose "Result logdir: <staging>" line reads "Experiment: <root>"."""

    def __init__(self, root: str, **kwargs):
        super().__init__(**kwargs)
        self._experiment_line = f"Experiment: {redact(root)}"

    def _progress_str(self, *args, **kwargs) -> str:
        text = super()._progress_str(*args, **kwargs)
        text = re.sub(r"^Result logdir: .*$", lambda _: self._experiment_line, text, count=1, flags=re.M)
        return re.sub(r"^Result logdir: .*\n?", "", text, flags=re.M)


def reporter(root: str, **kwargs) -> StudyReporter:
    return StudyReporter(root, **kwargs)
