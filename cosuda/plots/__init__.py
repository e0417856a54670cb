"""All figures of the notebooks and the runner. Library code elsewhere never draws.

One file per topic (datasets, method, training); everything is re-exported here so a notebook
writes ``from cosuda import plots; plots.show_samples(...)``.
"""
from .datasets import *  # noqa: E402,F401,F403
from .datasets import __all__ as _datasets_all  # noqa: E402
from .method import *  # noqa: E402,F401,F403
from .method import __all__ as _method_all  # noqa: E402
from .training import *  # noqa: E402,F401,F403
from .training import __all__ as _training_all  # noqa: E402
from .results import *  # noqa: E402,F401,F403  (lessons 02, 07-11: the committed grid)
from .toy2d import *  # noqa: E402,F401,F403  (notebook 13: the 2-D cosine-loss experiment)

__all__ = [*_datasets_all, *_method_all, *_training_all]
