"""Old import path of :mod:`fastsae.groundtruth` (planted embeddings in ``groundtruth/planted.py``,
recovery metrics in ``groundtruth/recovery.py``, the demo corpus in ``groundtruth/corpus.py``);
the package re-exports every name this module had. Kept so existing imports work."""
import sys

from . import groundtruth as _impl

sys.modules[__name__] = _impl
