"""Old import path of :mod:`fastsae.run.rundir`, where the code lives; kept so existing imports work."""
import sys

from .run import rundir as _impl

sys.modules[__name__] = _impl
