"""Old import path of :mod:`fastsae.autointerp.api`, which re-exports every name this module had
(the code lives in :mod:`.config`, :mod:`.results`, :mod:`.inputs`, :mod:`.backends`,
:mod:`.job` and :mod:`.api`); kept so existing imports work."""
import sys

from . import api as _impl

sys.modules[__name__] = _impl
