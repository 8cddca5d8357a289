"""DrQ's image augmentation: random shifts of uint8 frames by replicate padding and integer crops."""

from __future__ import annotations

import torch


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator | None = None, copies: int = 1,
                 shifts: torch.Tensor | None = None, gather: bool | None = None) -> torch.Tensor:
    """DrQ's random shift on a batch of images ``[B, C, H, W]`` (any dtype, uint8 here): ``copies`` shifted
    copies of each, ``[copies * B, C, H, W]`` (copy ``j`` of sample ``b`` at row ``j * B + b``).

    Each copy is the image replicate-padded by ``pad`` and cropped back at a random integer offset in
    ``[0, 2 * pad]`` on each axis, which is what DrQ's ``ReplicationPad2d`` + random crop and DrQ-v2's padded
    ``grid_sample`` compute, here as plain copies. ``shifts`` (``[copies * B, 2]``, row and column offsets)
    replaces the random draw (made with ``generator``, on its device). ``gather`` crops all copies with one
    indexing op instead of one slice copy each: the default on CUDA, where a loop would launch a kernel per
    image and sync on the offsets; both give the same pixels.
    """
    b, c, h, w = x.shape
    if shifts is None:
        device = generator.device if generator is not None else x.device
        shifts = torch.randint(0, 2 * pad + 1, (copies * b, 2), generator=generator, device=device)
    if pad == 0:
        return x.repeat(copies, 1, 1, 1)
    padded = x.new_empty(b, c, h + 2 * pad, w + 2 * pad)  # replicate padding, by slices
    padded[:, :, pad:pad + h, pad:pad + w] = x
    padded[:, :, :pad, pad:pad + w] = x[:, :, :1]
    padded[:, :, pad + h:, pad:pad + w] = x[:, :, -1:]
    padded[:, :, :, :pad] = padded[:, :, :, pad:pad + 1]
    padded[:, :, :, pad + w:] = padded[:, :, :, pad + w - 1:pad + w]
    if x.is_cuda if gather is None else gather:
        shifts = shifts.to(x.device)
        rows = shifts[:, :1] + torch.arange(h, device=x.device)  # [copies * B, H]
        cols = shifts[:, 1:] + torch.arange(w, device=x.device)  # [copies * B, W]
        src = torch.arange(copies * b, device=x.device) % b
        chans = torch.arange(c, device=x.device)
        return padded[src[:, None, None, None], chans[None, :, None, None], rows[:, None, :, None],
                      cols[:, None, None, :]]
    out = x.new_empty(copies * b, c, h, w)
    # On a CPU one slice copy per image beats the gather (about 8x, uint8 84x84).
    for i, (dy, dx) in enumerate(shifts.tolist()):
        out[i] = padded[i % b, :, dy:dy + h, dx:dx + w]
    return out
