"""Import Ultralytics so that it never reaches the network.

Nothing outside loopback is reachable where the model is built, and a silent download
attempt (fonts, weights, analytics, pip auto-updates) would either hang on timeouts
or fetch things we do not pin. The environment must be set before the first import.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

TRAINING_DIR = Path(__file__).resolve().parent
CONFIG_DIR = TRAINING_DIR / "runs" / "ultralytics-config"


def import_ultralytics() -> ModuleType:
    """The ultralytics module, configured offline with its settings kept in training/runs."""
    CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "1"  # is_online() -> False: no pip auto-update, no downloads
    os.environ["YOLO_CONFIG_DIR"] = str(CONFIG_DIR)  # keep the user's own settings untouched
    import ultralytics
    from ultralytics.utils import SETTINGS

    wanted = {
        "sync": False,  # no analytics events
        "hub": False,
        "clearml": False,
        "comet": False,
        "dvc": False,
        "mlflow": False,
        "neptune": False,
        "raytune": False,
        "tensorboard": False,
        "wandb": False,
        "weights_dir": str(TRAINING_DIR / "runs" / "weights"),
        "runs_dir": str(TRAINING_DIR / "runs"),
        "datasets_dir": str(TRAINING_DIR / "data"),
    }
    # Integrations come and go between releases; switch off those this one has.
    SETTINGS.update({k: v for k, v in wanted.items() if k in SETTINGS})
    return ultralytics
