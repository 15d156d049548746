import sys

from signs_resnet.cli import main

sys.exit(main())
