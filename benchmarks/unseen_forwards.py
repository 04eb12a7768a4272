"""Every built-in recipe on forwards written the way people write them (benchmarks/unseen_forward_models.py:
the input's shape unpacked and computed with, `x.view(x.size(0), -1)` after a convolution, chunked gates, einsum
attention, less common activations and norms, upsampling with skips, log-softmax outputs, recurrent layers read
by index): does each complete, load back into a fresh instance, profile, and export files that verify, or refuse
in one line? A robustness sweep, not an accuracy benchmark.

    python benchmarks/unseen_forwards.py --out runs/unseen-forwards.json [--models vit-attention] [--recipes int8]
        [--formats onnx,tflite,tflm,c,pte,ncnn,coreml]

Synthetic 8x8 images (1 or 3 channels), made here; each model trains 5 passes (Adam, 3e-3); recipes at their
smallest settings (unseen_inputs.py's loop). "crash" is a traceback from inside edgeshrink or a library: a bug.
Run it alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from unseen_forward_models import MODELS  # noqa: E402
from unseen_inputs import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(models=MODELS, doc=__doc__, runs="unseen-forwards"))
