"""OpenVocabSegmenter with a tiny random CLIP on scikit-image photos (offline, fast)."""
import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from gpua_mmseg.apis import OpenVocabSegmenter, Vocabulary
from gpua_mmseg.vis import class_palette, render_overlay

TINY_CLIP = dict(name='tiny', pretrained=None, model_cfg=dict(
    embed_dim=32, quick_gelu=True,
    vision_cfg=dict(image_size=32, patch_size=16, width=64, layers=2, head_width=16),
    text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)))
TINY_OPTIONS = {'model.clip': TINY_CLIP, 'model.templates': ['a photo of a {}.', 'a {}.'],
                'test_pipeline': [dict(type='Resize', scale=(512, 64), keep_ratio=True)],
                'model.slide_crop': 64, 'model.slide_stride': 32}


@pytest.fixture(scope='module')
def seg():
    import torch
    torch.manual_seed(0)
    return OpenVocabSegmenter('sclip', classes='cat, kitty; sofa; background', weights='random',
                              device='cpu', cfg_options=TINY_OPTIONS)


def test_parse_vocabulary_forms():
    assert Vocabulary.parse('cat, kitty; sofa ;background').classes == [['cat', 'kitty'],
                                                                        ['sofa'], ['background']]
    assert Vocabulary.parse(['cat, kitty', ['sofa', 'couch']]).classes == [['cat', 'kitty'],
                                                                           ['sofa', 'couch']]
    for bad in ('', 'cat;;dog', 'cat; dog;', ['cat', 3], 'cat, Cat'):
        with pytest.raises(ValueError):
            Vocabulary.parse(bad)


@pytest.mark.parametrize('kind', ['array', 'pil', 'path'])
def test_one_image_all_input_kinds(seg, kind, tmp_path):
    img = skimage.data.chelsea()  # 300 x 451
    if kind == 'pil':
        img = Image.fromarray(img)
    elif kind == 'path':
        Image.fromarray(img).save(tmp_path / 'c.png')
        img = str(tmp_path / 'c.png')
    res = seg(img)
    assert res.labels.shape == (300, 451) and res.labels.dtype == np.int64
    assert res.scores.shape == (3, 300, 451)
    assert res.classes == [['cat', 'kitty'], ['sofa'], ['background']]
    assert set(np.unique(res.labels)) <= {0, 1, 2}
    # scores are probabilities after the synonym max; labels = argmax where no threshold acts
    assert np.all(res.scores >= 0) and np.all(res.scores <= 1 + 1e-6)
    thd = seg.model.prob_thd
    confident = res.scores.max(0) >= thd
    np.testing.assert_array_equal(res.labels[confident], res.scores.argmax(0)[confident])


def test_same_input_same_result_across_kinds(seg):
    a = seg(skimage.data.coffee())
    b = seg(Image.fromarray(skimage.data.coffee()))
    np.testing.assert_array_equal(a.labels, b.labels)


def test_overlay_png_size_and_legend(seg):
    res = seg(skimage.data.astronaut())  # 512 x 512
    canvas, legend = res.overlay_with_legend(alpha=0.5)
    buf = io.BytesIO()
    canvas.save(buf, format='PNG')
    png = Image.open(io.BytesIO(buf.getvalue()))
    assert png.format == 'PNG' and png.mode == 'RGB'
    w, h = png.size
    assert h == 512 and w > 512  # legend panel to the right of the photo
    assert [e.name for e in legend] == ['cat', 'sofa', 'background']
    pix = np.asarray(png)
    for e in legend:
        x0, y0, x1, y1 = e.box
        assert x0 >= 512
        inner = pix[y0 + 2:y1 - 2, x0 + 2:x1 - 2].reshape(-1, 3)
        assert (inner == np.array(e.color)).all(), e
    assert len({e.color for e in legend}) == 3
    np.testing.assert_allclose(sum(e.fraction for e in legend), 1.0, atol=1e-6)
    # photo area: pixels of class c are a 50/50 blend of the photo and c's colour
    img = skimage.data.astronaut().astype(np.float64)
    pal = np.array([e.color for e in legend], dtype=np.float64)
    expect = 0.5 * img + 0.5 * pal[res.labels]
    assert np.abs(pix[:, :512].astype(np.float64) - expect).max() <= 1.0


def test_render_overlay_alpha_extremes_and_errors():
    img = skimage.data.chelsea()
    lab = np.zeros(img.shape[:2], np.int64)
    lab[:, 200:] = 1
    photo, entries = render_overlay(img, lab, ['a', 'b'], alpha=0.0, legend=False)
    assert entries == [] and photo.size == (451, 300)
    np.testing.assert_array_equal(np.asarray(photo), img)
    full, _ = render_overlay(img, lab, ['a', 'b'], alpha=1.0, legend=False)
    pal = class_palette(2)
    assert tuple(np.asarray(full)[0, 0]) == pal[0] and tuple(np.asarray(full)[0, 300]) == pal[1]
    with pytest.raises(ValueError, match='differ in size'):
        render_overlay(img, lab[:10], ['a', 'b'])
    with pytest.raises(ValueError, match='alpha'):
        render_overlay(img, lab, ['a', 'b'], alpha=2)


def _count_text_calls(monkeypatch, seg):
    enc = seg.model.clip_encoder
    calls = []
    orig = enc.encode_text

    def counting(tokens):
        calls.append(tokens.shape[0])
        return orig(tokens)
    monkeypatch.setattr(enc, 'encode_text', counting)
    return calls


def test_set_classes_recomputes_and_caches(seg, monkeypatch):
    calls = _count_text_calls(monkeypatch, seg)
    img = skimage.data.coffee()
    first = seg(img)
    assert calls == []  # built at construction
    seg.set_classes(['cup, mug', 'table', 'plant'])
    assert len(calls) == 1 and calls[0] == 4 * 2  # 4 queries x 2 templates
    other = seg(img)
    assert other.scores.shape[0] == 3 and other.names == ['cup', 'table', 'plant']
    assert seg.model.bg_idx is None and seg.model.prob_thd == 0.0  # no background class
    seg.set_classes('cat, kitty; sofa; background')
    seg.set_classes(['cup, mug', 'table', 'plant'])
    seg.set_classes('cat, kitty; sofa; background')
    assert len(calls) == 1  # switching back never re-encodes
    again = seg(img)
    np.testing.assert_array_equal(again.labels, first.labels)
    np.testing.assert_allclose(again.scores, first.scores, atol=1e-6)
    assert seg.model.bg_idx == 2


def test_segment_many_reports_throughput(seg, tmp_path):
    for i, name in enumerate(['chelsea', 'coffee', 'rocket']):
        Image.fromarray(getattr(skimage.data, name)()).save(tmp_path / f'{i}_{name}.jpg')
    (tmp_path / 'notes.txt').write_text('not an image')
    seen = []
    rep = seg.segment_many(str(tmp_path), on_result=lambda p, r: seen.append(p))
    assert len(rep.paths) == 3 and len(rep.results) == 3 and seen == rep.paths
    assert rep.seconds > 0 and rep.images_per_s == pytest.approx(3 / rep.seconds)
    assert rep.results[2].labels.shape == skimage.data.rocket().shape[:2]


def test_bad_inputs(seg):
    with pytest.raises(ValueError, match='uint8'):
        seg(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(FileNotFoundError):
        seg('/nonexistent/image.png')
    with pytest.raises(FileNotFoundError, match='known short name'):
        OpenVocabSegmenter('no_such_method', classes='a; b', weights='random')
