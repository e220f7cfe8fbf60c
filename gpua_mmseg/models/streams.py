"""Run the VFM beside CLIP on a second CUDA stream (issue 13).

In the launch-bound regime of a GPU (batch 1, a handful of 224-pixel crops) neither ViT fills
the device, so CLIP's and the VFM's forwards, which do not depend on each other (except in
ProxyCLIP, whose attention reads the VFM tokens), can run at the same time.  Ordering is by CUDA
events only: the host never waits, it enqueues the VFM on the side stream, CLIP on the current
one, and makes the current stream wait for the side stream before anything reads the tokens.

Off CUDA every method here is a no-op, so the CPU path is the sequential one, bit for bit.
"""
import contextlib
from typing import Optional

import torch


def check_overlap(value) -> bool:
    """``overlap_encoders`` must be True or False (not 0/1, not a string)."""
    if value is not True and value is not False:
        raise ValueError(f'overlap_encoders must be True or False, got {value!r}')
    return value


class SideStream:
    """A second stream on ``device`` for work that runs beside the current stream.

    ``SideStream(device, enabled)`` is inert (``active`` False) unless ``enabled`` and
    ``device`` is a CUDA device.

    * :meth:`launch`: a context; work enqueued inside runs on the side stream, after everything
      already enqueued on the current stream (its inputs are ready).
    * :meth:`join` ``(*tensors)``: the current stream waits for the side stream's work so far;
      ``tensors`` made on the side stream are marked as used by the current stream, so the
      caching allocator does not hand their memory to the side stream while the current stream
      may still read it.
    """

    def __init__(self, device: torch.device, enabled: bool = True):
        device = torch.device(device)
        self.active = bool(enabled) and device.type == 'cuda'
        self.device = device
        self.stream: Optional['torch.cuda.Stream'] = (torch.cuda.Stream(device) if self.active
                                                      else None)

    @contextlib.contextmanager
    def launch(self):
        if not self.active:
            yield
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            yield

    def join(self, *tensors) -> None:
        if not self.active:
            return
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(self.stream)
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.is_cuda:
                t.record_stream(current)
