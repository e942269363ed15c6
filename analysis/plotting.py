"""matplotlib for every module that draws: the Agg backend (files, no display) is chosen here, before
pyplot loads, so no figure module depends on being imported after another."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

__all__ = ["plt", "Figure", "Rectangle"]
