"""localstripe without its disk copy, for the tests and bench/billing.py: run it with
localstripe's own Python (``<venv>/bin/python scripts/localstripe-in-memory.py --from-scratch
--port N``).

localstripe pickles its whole store to ``/tmp/localstripe.pickle`` after every write: that is
quadratic in the objects it holds (setting up 1,000 customers had it at 91% of a core,
pickling 1.4 MB per request), and that one fixed path is shared by every instance on the
machine. Started ``--from-scratch`` it never reads the file, so nothing is lost by not
writing it.
"""

import sys

from localstripe.resources import Store

Store.dump_to_disk = lambda self: None

from localstripe.server import start  # noqa: E402

sys.exit(start())
