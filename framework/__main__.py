import sys

from framework.cli.app import main

sys.exit(main())
