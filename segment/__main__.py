"""`python -m segment` is `segment`."""

import sys

from segment.cli import main

sys.exit(main())
