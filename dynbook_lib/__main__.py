import sys

from dynbook_lib.cli import main

sys.exit(main())
