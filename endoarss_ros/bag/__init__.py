"""Recordings on disk, with `rosbags` (no rclpy): rosbag2 reading (``reader``, ``messages``, ``msgtypes``,
``mcap_checksums``) and writing (``writer``, ``synth_bag``); offline replay of one recording (``replay``,
``replay_report``, ``media``, ``partials``) and of an archive (``archive``, ``archive_report`` with its picture
``archive_plot`` and its page ``archive_html``); labelled videos for the temporal model (``labelled``), their cached
frame features (``feature_cache``) and the temporal model scored over them as the node runs it
(``temporal_scoring``)."""
