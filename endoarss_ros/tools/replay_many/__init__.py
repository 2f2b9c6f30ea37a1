"""``endoarss replay-many`` (``replay_many.py``) and its parts: the Ray cluster and replayer actors
(``replay_many_cluster``) and the driver loop that hands recordings out (``replay_many_dispatch``)."""
