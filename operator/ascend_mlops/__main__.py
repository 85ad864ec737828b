import sys

from ascend_mlops.cli import main

sys.exit(main())
