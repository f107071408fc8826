"""The old home of the run-folder contract, now `samlib.study.layout`; kept only for samlib/train.py's
import until that moves to the layout module."""

from samlib.study.layout import COMPLETE, WEIGHTS, is_complete

__all__ = ["COMPLETE", "WEIGHTS", "is_complete"]
