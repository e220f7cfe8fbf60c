"""Issue 11 item 3: a 16-bit grey PNG is scaled to 8 bits (Pillow's convert('RGB') made it pure
white) and the EXIF orientation is applied -- through tools/demo.py (the session's batch run,
``--alpha 0`` so the overlay's photo part is the decoded input)."""
import numpy as np
from PIL import Image, ImageOps


def _photo_part(path, w, h):
    return np.asarray(Image.open(path).convert('RGB'))[:h, :w].astype(int)


def test_16bit_png_scaled_to_8bit(demo_runs):
    b = demo_runs['batch']
    assert Image.open(b.imgs / 'grey16.png').mode.startswith('I;16')  # the input is 16-bit
    assert (b.outdir / 'grey16_labels.png').is_file()
    assert Image.open(b.outdir / 'grey16_labels.png').size == (80, 48)
    got = _photo_part(b.outdir / 'grey16_overlay.png', 80, 48)
    want = np.round(np.linspace(0, 65535, 80).round() / 257.0)  # 65535 -> 255, 0 -> 0
    assert np.abs(got - want[None, :, None]).max() <= 1
    assert got.min() == 0 and got.max() == 255  # the full gradient, not white


def test_exif_orientation_applied(demo_runs):
    b = demo_runs['batch']
    stored = Image.open(b.imgs / 'rotated.jpg')
    assert stored.size == (64, 40) and stored.getexif()[0x0112] == 6
    # outputs have the size the picture is shown at (rotated), not the stored one
    assert Image.open(b.outdir / 'rotated_labels.png').size == (40, 64)
    shown = np.asarray(ImageOps.exif_transpose(stored).convert('RGB')).astype(int)
    assert shown.shape == (64, 40, 3)
    assert np.abs(_photo_part(b.outdir / 'rotated_overlay.png', 40, 64) - shown).max() <= 1
