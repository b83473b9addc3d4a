"""The console is for people: the project's own lines, warnings and errors.

Orbax, Grain, JAX and TensorBoard log at INFO through absl and Python logging (Orbax
prints its manager options on every save). `setup()` keeps INFO lines only from this
project (`norface_jax/` and `launch/`) and WARNING and above from everyone;
`--log_all` (or `setup(verbose=True)`) lets every library's INFO through again.
"""

from __future__ import annotations

import logging as py_logging
import os

from absl import flags, logging

_LOG_ALL = flags.DEFINE_bool("log_all", False, "Show other libraries' INFO log lines too "
                             "(Orbax, Grain, JAX); by default only this project's and warnings.")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OWN = (os.path.join(_ROOT, "norface_jax") + os.sep, os.path.join(_ROOT, "launch") + os.sep)


class OwnInfoFilter(py_logging.Filter):
  """Passes records at WARNING and above, and this project's own records at any level."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or record.pathname.startswith(_OWN)


_FILTER = OwnInfoFilter()


def setup(verbose: bool | None = None) -> None:
  """INFO verbosity for the project; other libraries' INFO hidden unless `verbose`
  (default: the `--log_all` flag)."""
  if verbose is None:
    verbose = _LOG_ALL.value if flags.FLAGS.is_parsed() else False
  logging.set_verbosity(logging.INFO)
  # On the `absl` logger itself (every absl.logging call, whatever handler prints it:
  # absl's under app.run, Python's default elsewhere) and on the absl handler (records
  # of other Python loggers that reach it).
  for target in (py_logging.getLogger("absl"), logging.get_absl_handler()):
    target.removeFilter(_FILTER)
    if not verbose:
      target.addFilter(_FILTER)
  for name in ("jax", "orbax", "grain", "tensorflow", "matplotlib", "PIL"):
    py_logging.getLogger(name).setLevel(py_logging.INFO if verbose else py_logging.WARNING)
