"""`python -m benchmarks [options]`: run the benchmark suite (see `python -m benchmarks --help`)."""

import sys

from .cli import main

sys.exit(main())
