import sys

from cems.cli import main

sys.exit(main())
