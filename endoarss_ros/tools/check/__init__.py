"""``endoarss check`` (``check.py``) and the publisher / subscriber pair it runs in two processes
(``check_pubsub``)."""
