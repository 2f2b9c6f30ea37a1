"""pip install of endoarss_ros: everything that needs no ROS (model, training, bag replay, CLI).

The ROS node and the generated messages need a ROS 2 environment: scripts/setup_env.sh builds one
in .venv, or use a colcon workspace on a ROS 2 install (see README).
"""
from setuptools import find_packages, setup

setup(
    name="endoarss_ros",
    version="0.1.0",
    description="EndoARSS surgical activity recognition and segmentation for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["endoarss_ros", "endoarss_ros.*"]),
    install_requires=[
        "numpy>=1.24",
        "torch>=2.4",
        "safetensors>=0.4",
        "pyyaml>=6",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10",
        "tqdm>=4.60",
    ],
    extras_require={
        "export": ["onnx>=1.16", "onnxruntime>=1.18"],
        "plots": ["matplotlib>=3.7"],
        # `endoarss replay-many` on Ray: Ray Core only (the node and `endoarss replay` never import it)
        "cluster": ["ray>=2.60,<3", "matplotlib>=3.7"],
    },
    entry_points={
        "console_scripts": [
            "endoarss = endoarss_ros.cli:main",
            "endoarss-perception = endoarss_ros.ros.perception_node:main",
        ],
    },
)
