import sys

from sessionwatch.cli import main

sys.exit(main())
