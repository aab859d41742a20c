"""The mark of tests that need a CUDA GPU: CI (no GPU) skips them and says why in pytest's summary."""

from __future__ import annotations

import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
