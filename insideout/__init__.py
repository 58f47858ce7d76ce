"""insideout: the helper package of the course *Transformers from the Inside Out*.

Subpackages follow the book's parts: ``insideout.manual`` (Part 1, pure Python), ``insideout.gpt`` (Part 2).
"""

__version__ = "0.1.0"
