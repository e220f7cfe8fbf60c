"""Issue 13, GPU item: ``overlap_encoders`` runs the VFM on a second CUDA stream beside CLIP.

What can be checked without a GPU, and is what makes the overlap possible at all:

* the same scores, bit for bit, with the option on and off (the lazy-token path reorders the
  host calls, not the arithmetic), for ``vfm_window='crop'`` and ``'whole'``;
* the order in which the host enqueues the work: the VFM inside the side stream's ``launch``,
  CLIP's forward *before* the current stream is told to wait for the side stream (a join
  before CLIP would serialise the two again and still give the same scores);
* ProxyCLIP (CLIP reads the VFM tokens) never overlaps; a bad value is one clear error.

The CUDA test (skipped without a GPU) checks the streams the forwards really run on.
"""
import contextlib

import pytest
import torch

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
from _helpers import TINY_VOCAB as VOCAB
from _helpers import random_alignment, tiny_clip_encoder
from gpua_mmseg.models.segmentor import GPUASegmentor
from gpua_mmseg.models.streams import SideStream
from mmseg.structures import SegDataSample


@pytest.fixture(scope='module')
def alignment(tiny_sclip, tiny_dino, tmp_path_factory):
    return random_alignment(tmp_path_factory.mktemp('overlap') / 'a.safetensors', tiny_sclip, tiny_dino)


def segmentor(clip, dino, alignment, **kw):
    kw = dict(dict(slide_crop=64, slide_stride=32, crop_batch_size=4), **kw)
    head = dict(type='GPUAHead', alignment_path=alignment, fusion_weight=0.5)
    return GPUASegmentor(clip=clip, clip_mode='sclip', class_names=VOCAB, templates=['{}'],
                         vfm=dino, decode_head=head, **kw).eval()


def scores(seg, image):
    h, w = image.shape[-2:]
    sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
    with torch.no_grad():
        return seg.predict(image[None] * 255, [sample])[0].seg_logits.data


def image(seed=3, h=96, w=128):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('window', ['crop', 'whole'])
def test_overlap_gives_the_same_scores(tiny_sclip, tiny_dino, alignment, window):
    img = image()
    off = scores(segmentor(tiny_sclip, tiny_dino, alignment, vfm_window=window), img)
    on = scores(segmentor(tiny_sclip, tiny_dino, alignment, vfm_window=window, overlap_encoders=True), img)
    assert torch.equal(off, on)


class RecordingSide:
    """Stands in for a CUDA side stream: logs what is enqueued inside it and when it joins."""
    active = True

    def __init__(self, log):
        self.log = log

    @contextlib.contextmanager
    def launch(self):
        self.log.append('launch')
        yield
        self.log.append('end')

    def join(self, *tensors):
        assert tensors, 'join must mark the side-stream tensors for the current stream'
        self.log.append('join')


def record_order(seg, img, monkeypatch):
    log = []
    monkeypatch.setattr(seg, 'side_stream', lambda device: RecordingSide(log))
    for name, enc in (('vfm', seg.vfm_encoder), ('clip', seg.clip_encoder)):
        def patched(*a, _f=enc.patch_features, _n=name, **k):
            log.append(_n)
            return _f(*a, **k)
        monkeypatch.setattr(enc, 'patch_features', patched)
    head = seg.decode_head

    def gpua(*a, _f=head.gpua_on_grid, **k):
        log.append('head')
        return _f(*a, **k)
    monkeypatch.setattr(head, 'gpua_on_grid', gpua)
    scores(seg, img)
    return log


def test_clip_is_enqueued_before_the_vfm_tokens_are_awaited_crop(tiny_sclip, tiny_dino, alignment,
                                                                 monkeypatch):
    # 96 x 128 at crop 64 / stride 32: 2 x 3 = 6 crops, batches of 4 and 2
    seg = segmentor(tiny_sclip, tiny_dino, alignment, vfm_window='crop', overlap_encoders=True)
    log = record_order(seg, image(), monkeypatch)
    assert log == ['launch', 'vfm', 'end', 'clip', 'join', 'head'] * 2


def test_clip_is_enqueued_before_the_vfm_tokens_are_awaited_whole(tiny_sclip, tiny_dino, alignment,
                                                                  monkeypatch):
    seg = segmentor(tiny_sclip, tiny_dino, alignment, vfm_window='whole', overlap_encoders=True)
    log = record_order(seg, image(), monkeypatch)
    # one VFM forward per image on the side stream, then CLIP's first batch beside it
    assert log == ['launch', 'vfm', 'end', 'clip', 'join', 'head', 'clip', 'head']


def test_side_stream_is_inert_off_cuda_when_off_and_for_proxyclip(tiny_sclip, tiny_dino, alignment):
    assert not segmentor(tiny_sclip, tiny_dino, alignment, overlap_encoders=True).side_stream('cpu').active
    assert not segmentor(tiny_sclip, tiny_dino, alignment).side_stream('cuda').active  # option off
    proxy = tiny_clip_encoder('proxyclip')
    seg = GPUASegmentor(clip=proxy, clip_mode='proxyclip', class_names=VOCAB, templates=['{}'],
                        vfm=tiny_dino, slide_crop=64, slide_stride=32, overlap_encoders=True)
    assert not seg.side_stream('cuda').active  # CLIP's attention needs the tokens first
    assert not SideStream('cpu', True).active


@pytest.mark.parametrize('bad', ['yes', 1, None])
def test_bad_overlap_value(tiny_sclip, tiny_dino, alignment, bad):
    with pytest.raises(ValueError, match=r'overlap_encoders must be True or False, got'):
        segmentor(tiny_sclip, tiny_dino, alignment, overlap_encoders=bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('window', ['crop', 'whole'])
def test_cuda_vfm_runs_on_the_side_stream(tiny_sclip, tiny_dino, alignment, window, monkeypatch):
    img = image().cuda()
    off = segmentor(tiny_sclip, tiny_dino, alignment, vfm_window=window).cuda()
    on = segmentor(tiny_sclip, tiny_dino, alignment, vfm_window=window, overlap_encoders=True).cuda()
    try:
        want = scores(off, img)
        streams = {'vfm': set(), 'clip': set()}
        for name, enc in (('vfm', on.vfm_encoder), ('clip', on.clip_encoder)):
            def patched(*a, _f=enc.patch_features, _n=name, **k):
                streams[_n].add(torch.cuda.current_stream().cuda_stream)
                return _f(*a, **k)
            monkeypatch.setattr(enc, 'patch_features', patched)
        got = scores(on, img)
        main = torch.cuda.current_stream().cuda_stream
        assert torch.equal(want, got)
        assert streams['clip'] == {main}
        assert streams['vfm'] and main not in streams['vfm']
    finally:
        on.cpu()  # the encoders are shared with the other tests of this module
