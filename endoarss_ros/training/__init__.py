"""Training and evaluating the models: the frame model's losses, multi-task weighting, data, train / eval loops,
robustness and plots (``loop``, ``weighting``, ...), and the temporal model's loop on cached features
(``temporal_loop``, ``temporal_plots``)."""
