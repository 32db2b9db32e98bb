import sys

from slot_operator.cli import main

sys.exit(main())
