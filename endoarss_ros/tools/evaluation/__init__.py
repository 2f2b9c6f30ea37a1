"""The evaluation tools: ``endoarss eval`` (``eval.py``), ``eval-status`` (``eval_status.py``), ``eval-temporal``
(``eval_temporal.py``), and the demo weights' report (``eval_report.py``, run with ``python -m``)."""
