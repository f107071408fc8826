import os
import sys

# TensorFlow's C++ start-up chatter hides the command's own output; a user's setting wins
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from samlib.cli import main  # noqa: E402

sys.exit(main())
