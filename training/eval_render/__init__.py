"""A second, independent renderer of deposit frames, for evaluation only.

It shares no drawing code with `deposit_synth` (the training generator) and is never
used for training. Where `deposit_synth` paints items on their own canvas as bodies of
revolution and composites them with alpha, this one draws every item as a vector
outline (polygons built from a shape description) straight into the frame, transformed
by a homography, cel-shaded with a few flat tones or plain flat colour, often with an
ink outline; its chutes are tiled panels with seams, guide rails, rollers and bolts.
A model that only learned the training generator's look fails here; one that learned
what bottles, cans and foreign objects look like does not.

Classes, in index order, are the model's: 0 pet_bottle, 1 can, 2 other.
"""

EVAL_CLASS_NAMES: tuple[str, ...] = ("pet_bottle", "can", "other")
