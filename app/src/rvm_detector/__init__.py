"""RVM deposit detector: camera -> YOLO11 -> deposit records -> MyRVM platform."""

__version__ = "0.1.0"
