"""noisebench: measure how label and pixel noise change what a neural network learns.

>>> from noisebench import Study
>>> study = Study.from_preset("seed000")
>>> [setup.noise for setup in study.setups]
['labels.uniform', 'pixels.replace']
>>> len(study.plan())  # 2 setups x 6 noisy levels x 3 seeds + 3 shared clean baselines
39
"""

from .errors import NoisebenchError
from .results import Results
from .study import Study

__version__ = "0.1.0"
__all__ = ["NoisebenchError", "Results", "Study", "__version__"]
