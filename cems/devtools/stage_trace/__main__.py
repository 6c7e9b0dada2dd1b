import sys

from cems.devtools.stage_trace import main

sys.exit(main())
