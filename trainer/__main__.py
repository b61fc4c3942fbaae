"""``python -m forgetmi_trainer``."""

import sys

from forgetmi_trainer.cli import main

sys.exit(main())
