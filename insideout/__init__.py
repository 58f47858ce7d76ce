"""insideout: the helper package of the course *Transformers from the Inside Out*.

Subpackages follow the book's parts: ``insideout.manual`` (Part 1, pure Python), ``insideout.gpt`` (Part 2).
Importing the package pins the CPU numerics (``insideout.utils.pin_numerics``) before any tensor is computed, so
that every chapter re-executes bit for bit on any x86-64 machine; ``INSIDEOUT_NUMERICS=native`` opts out.
"""

from insideout.utils import pin_numerics as _pin_numerics

__version__ = "0.1.0"

_pin_numerics()
