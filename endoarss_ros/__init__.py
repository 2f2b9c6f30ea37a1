"""EndoARSS for ROS 2: surgical activity recognition and semantic segmentation.

Importing this package loads neither ROS nor torch: the subpackages do that on demand.
"""

# The generated ROS interfaces (``endoarss_ros.msg``) may live in another ``endoarss_ros``
# directory than this source tree (the venv's site-packages, a colcon install space):
# merge those directories into this package so ``from endoarss_ros.msg import Activity`` works.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"
