import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import tgs.compat  # noqa: E402,F401  (before anything imports torchvision or timm)
