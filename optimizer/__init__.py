"""The optimiser: problem data, the cvxpy problem and its lean solver engines, policies.

Importing the package imports cvxpy with scipy.stats deferred (:mod:`optimizer.deferred_import`),
which saves about 0.3 s of every command that solves.
"""

from optimizer.deferred_import import import_cvxpy

import_cvxpy()
