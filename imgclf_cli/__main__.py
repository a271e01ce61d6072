import sys

from imgclf_cli.main import main

sys.exit(main())
