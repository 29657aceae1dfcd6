"""Old import path of :mod:`fastsae.groundtruth.codes`, where the code lives; kept so existing imports work."""
import sys

from .groundtruth import codes as _impl

sys.modules[__name__] = _impl
