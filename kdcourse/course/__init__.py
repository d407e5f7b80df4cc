"""The course machinery: what runs, records and presents the book, not needed to use the library.

``book`` (convert, execute and build the chapters; run the tests), ``cli`` (the ``kdcourse``
command), ``profiles`` (smoke / full), ``results`` (result files), ``findings`` (what a chapter
presents: its live run, or in smoke the recorded results), ``tables`` and ``plots``, ``timings``
(the README's recorded timings), ``publish`` (notebooks for launch buttons), ``bench`` (the training-
step benchmark).
"""
