"""`python -m trainer --config tiny --data MIXTURE --out RUN [key=value ...]`.

The train extra is checked before trainer.train imports it, so a plain `pip install medmix` gets
the one install line `medmix train` gives, not a traceback (`medmix.core.extras`).
"""

import sys

from medmix.core.extras import MissingExtra, require

try:
    require("train")
except MissingExtra as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)  # as `medmix train`, and as main() for any other MedmixError

from trainer.train import main  # noqa: E402 - only once the extra is known to be there

main()
