"""``endoarss bench`` (``bench.py``) and its parts: the frames it feeds (``bench_frames``), per-stage timing
(``bench_timing``), the naive released pipeline (``bench_baseline``), the report (``bench_report``), the latency
over ROS (``bench_ros``) and the temporal step (``bench_temporal``); and ``bench_archive`` (``python -m``), the
replay-many archive report at 10,000 recordings."""
