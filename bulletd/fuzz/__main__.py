import sys

from bulletd.fuzz.driver import main

sys.exit(main())
