"""rtdetr-launcher: unattended Ultralytics RT-DETR training that survives out-of-memory crashes."""

__version__ = "0.1.0"
