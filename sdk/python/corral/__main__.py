"""``python3 -m corral``: the corral CLI."""
import sys

from .cli import main

sys.exit(main())
