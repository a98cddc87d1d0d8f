"""``python -m keras_facemargin.cli``: the same as the ``facemargin`` command."""

import sys

from keras_facemargin.cli import console_main

sys.exit(console_main())
