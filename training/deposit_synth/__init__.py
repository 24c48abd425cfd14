"""Synthetic deposit-chute scenes for training the detector we ship.

No public data set or model hub is reachable from where the model is built, so the
training data is drawn procedurally: bottles, cans and foreign objects on chute-like
backgrounds. Every sample is a pure function of (seed, split, index), so any sample can
be regenerated on its own, byte for byte.
"""

CLASS_NAMES: tuple[str, ...] = ("pet_bottle", "can", "other")
