import sys

from replay.cli.main import main

sys.exit(main())
