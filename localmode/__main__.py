import sys

from localmode.cli import main

sys.exit(main())
