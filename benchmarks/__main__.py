"""``python -m benchmarks NAME... [--quick] [--out FILE]``: the suite's one entry point (benchmarks/suite.py)."""
import sys

from benchmarks.suite import main

if __name__ == "__main__":
    sys.exit(main())
