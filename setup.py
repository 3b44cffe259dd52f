"""fptflite: FasterPose in Keras, shipped as an int8 TensorFlow Lite model."""

from setuptools import find_packages, setup

setup(
    name="fptflite",
    version="0.1.0",
    description="Train FasterPose in Keras and ship it as a verified int8 TFLite model.",
    # Only the library is installed; the binaries (training/, conversion/, benchmarks/) run
    # from the checkout: python -m training.train, python -m conversion.convert, ...
    packages=find_packages(include=["fptflite", "fptflite.*"]),
    # Tested on 3.11 only (CI): numpy 2.4 needs >= 3.11 and tflite-runtime 2.14 (make
    # runtimes) has no 3.12 wheel.
    python_requires="==3.11.*",
    install_requires=[
        "tensorflow==2.21.0",
        "tf-keras==2.21.0",
        "tensorboard==2.21.0",
        "tensorflow-model-optimization==0.8.1",
        "ai-edge-litert==2.3.0",
        "numpy==2.4.6",
        "opencv-python-headless==5.0.0.93",
        "pycocotools==2.0.11",
        "absl-py==1.4.0",
        "matplotlib==3.11.2",
    ],
    extras_require={"test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "ruff==0.17.5"],
                    # MPII head boxes from the gt_valid.mat file (fptflite.data.mpii)
                    "mpii": ["scipy==1.17.1"]},
)
