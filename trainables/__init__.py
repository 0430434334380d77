"""Trainables: the per-frame jobs (any registered temporal model over per-frame inputs; the
per-frame CNN), label arrangements, metrics and transferability estimators. Import the
modules themselves (``from trainables.train_job import Trainer``); the module map is in
docs/architecture.md. Importing the package imports nothing else, so ``kitchen-study --help``
does not pay for torch or Ray.
"""
