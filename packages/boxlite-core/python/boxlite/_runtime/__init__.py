"""The code of :mod:`boxlite.runtime`, one concern a module; ``boxlite.runtime`` re-exports it.

``runtime.py`` (``Boxlite``: the home, creating and finding boxes, the stop at exit) →
``box.py`` (``Box``: executions, metrics, copy in/out, start/stop) → ``execution.py``
(``Execution``) → ``streams.py`` (its stdin and output streams); ``result.py``
(``ExecResult``) and ``info.py`` (``BoxInfo``, ``BoxMetrics``, ``RuntimeMetrics``) are the
values they return.
"""
