"""Fixtures every test package shares.

``launcher`` (:func:`tests.helpers.processes.launcher`): the product launcher,
logging to the test's ``tmp_path``; whatever it started is stopped at the end.
"""

from tests.helpers.processes import launcher

__all__ = ["launcher"]
