"""``python -m kdcourse ...``: the same as the ``kdcourse`` command."""

import sys

from kdcourse.course.cli import main

sys.exit(main())
