"""Everything that imports rclpy: the perception node, the live bag player, conversions, QoS, diagnostics."""
