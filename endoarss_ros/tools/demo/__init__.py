"""``endoarss demo`` (``demo.py``) and its parts: the recording (``demo_recording``), the live run of player and
node (``demo_live``) and the summary (``demo_report``)."""
