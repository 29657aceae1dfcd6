"""Old import path of :mod:`fastsae.run.cli`, where the code lives; kept so existing imports (and
``python -m fastsae.cli``) work."""
import sys

from .run import cli as _impl

if __name__ == "__main__":
    sys.exit(_impl.main())
sys.modules[__name__] = _impl
