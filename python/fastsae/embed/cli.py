"""Old import path of :mod:`fastsae.run.embed_cli`, where the code lives; kept so existing imports work."""
import sys

from ..run import embed_cli as _impl

sys.modules[__name__] = _impl
