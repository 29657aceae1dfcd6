"""Old import path of :mod:`fastsae.groundtruth` (the demo corpus in ``groundtruth/corpus.py``, its
taxonomy in ``groundtruth/taxonomy.py``, topic recovery in ``groundtruth/recovery.py``); the
package re-exports every name this module had. Kept so existing imports work."""
import sys

from . import groundtruth as _impl

sys.modules[__name__] = _impl
