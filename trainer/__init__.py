"""Forget-MI trainer: the program that runs inside every unlearning Job.

This package's top level imports nothing heavy: ``forgetmi_trainer.contract`` and
``forgetmi_trainer.storage`` are torch-free and shared with the operator.
"""

__version__ = "0.1.0"
