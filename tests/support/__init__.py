"""Helpers shared by the tests (imported as ``from support.<module> import ...``; tests/ is on the path).

`REPO_ROOT` is the checkout's root folder.
"""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
