"""Issue 11 item 4 through tools/demo.py: ``--classes ""`` is refused (exit 2, nothing
written); two images with the same stem (x.jpg, x.png) write separate outputs; a class name
longer than the text context is warned about."""
import os

from PIL import Image


def test_empty_classes_refused(demo_runs):
    r = demo_runs['empty classes']
    assert r.rc == 2 and 'Traceback' not in r.err, r.err
    assert '--classes' in r.err and 'empty' in r.err
    assert not r.outdir.exists()


def test_same_stem_outputs_do_not_overwrite(demo_runs):
    b = demo_runs['batch']
    out = b.outdir
    assert not (out / 'x_overlay.png').exists() and not (out / 'x_labels.png').exists()
    # each output has the size of its own input (x.png 64 x 48, x.jpg 48 x 64)
    assert Image.open(out / 'x_png_labels.png').size == Image.open(b.imgs / 'x.png').size
    assert Image.open(out / 'x_jpg_labels.png').size == Image.open(b.imgs / 'x.jpg').size
    assert (out / 'x_png_overlay.png').is_file() and (out / 'x_jpg_overlay.png').is_file()
    assert 'share a file name stem' in b.out


def test_class_name_longer_than_context_warned(demo_runs):
    b = demo_runs['batch']
    from _hostile import LONG_NAME
    lines = [ln for ln in b.err.splitlines() if 'text context' in ln and LONG_NAME in ln]
    assert lines and 'shorten' in lines[0], b.err[-3000:]
    assert "'cat'" not in lines[0]  # only the long name is reported
    assert (b.outdir / 'rotated_labels.png').is_file()  # the run went on
