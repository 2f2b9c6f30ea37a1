"""Rosbag2 reading / writing and offline replay with `rosbags` (no rclpy)."""
