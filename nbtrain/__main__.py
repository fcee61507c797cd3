"""``python -m nbtrain`` (and ``accelerate launch -m nbtrain run config.yaml``)."""

import sys

from nbtrain.cli import main

sys.exit(main())
