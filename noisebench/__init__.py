"""noisebench: measure how label and pixel noise change what a neural network learns.

>>> from noisebench import Study
>>> study = Study.from_preset("seed000")
>>> [setup.noise for setup in study.setups]
['labels.uniform', 'pixels.replace']
>>> len(study.plan())  # 2 setups x 6 noisy levels x 3 seeds + 3 shared clean baselines
39
"""

from typing import TYPE_CHECKING, Any

from .errors import NoisebenchError

if TYPE_CHECKING:
    from .results import Results
    from .study import Study

__version__ = "0.1.0"
__all__ = ["NoisebenchError", "Results", "Study", "__version__"]


def __getattr__(name: str) -> Any:
    """Study and Results are imported when first used, so `noisebench` (the command) starts
    without importing torch and can answer Ctrl-C at once."""
    if name == "Study":
        from .study import Study

        return Study
    if name == "Results":
        from .results import Results

        return Results
    raise AttributeError(f"module 'noisebench' has no attribute '{name}'")
