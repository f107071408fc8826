import sys

from samlib.cli import main

sys.exit(main())
