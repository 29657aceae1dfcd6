"""``python -m fastsae`` runs the command line (:mod:`fastsae.run.cli`)."""
import sys

from .run.cli import main

sys.exit(main())
