"""Write the synthetic churn data set: python examples/churn/generate.py OUT [--rows N] [--seed S].

The generator lives in the package (``shipml.examples.churn``) so that ``shipml
quickstart`` works from an installed wheel; this script and ``shipml example
churn`` are two doors to it.
"""

import sys

from shipml.cli import main

if __name__ == "__main__":
    sys.argv = ["shipml", "example", "churn", *sys.argv[1:]]
    main()
