"""The perception node and what only it needs: parameters, QoS, conversions, diagnostics, the frame slots.

The library's one folder that imports rclpy (the entry points in ``tools/`` use it too)."""
