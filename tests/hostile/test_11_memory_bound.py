"""Issue 11 item 11: post-processing memory does not grow with original size x classes.

Normal sizes: predictions and scores bit-identical to the plain full-resolution path.  Huge
sizes: the banded path gives the same labels (up to float ties), keeps scores at the working
resolution, and tools/benchmark.py --memory shows the peak RSS increase staying within the
documented bound, far below one full-size logits tensor."""
import os
import os.path as osp
import stat

import pytest
import torch
import torch.nn.functional as F
from _hostile import TOOLS, run

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
from gpua_mmseg.models import postprocess
from gpua_mmseg.models.clip import build_clip_encoder, tiny_clip_model_cfg
from gpua_mmseg.models.postprocess import predict_labels, query_to_class_scores
from gpua_mmseg.models.segmentor import GPUASegmentor
from mmseg.structures import SegDataSample


@pytest.fixture(scope='module')
def seg():
    torch.manual_seed(0)
    clip = build_clip_encoder(dict(name='tiny', pretrained=None, model_cfg=tiny_clip_model_cfg(
        width=32, layers=2, heads=2, embed_dim=16, text_width=32, text_layers=1, text_heads=2,
        context_length=16)), mode='sclip')
    # voc21 has synonyms: Q = 60 queries for C = 21 classes
    s = GPUASegmentor(clip=clip, clip_mode='sclip', class_names='voc21', templates=['{}'],
                      slide_crop=32, slide_stride=16, logit_scale=40.0, bg_idx=0).eval()
    s.get_text_embeddings()
    return s


def _predict(seg, img, ori, **thresholds):
    for k, v in thresholds.items():
        setattr(seg, k, v)
    try:
        meta = dict(img_shape=tuple(img.shape[-2:]), ori_shape=ori)
        out = seg.predict(img[None], [SegDataSample(metainfo=meta)])[0]
        logits = seg.encode_decode(img[None], [meta])[0]
        return out.seg_logits.data, out.pred_sem_seg.data[0], logits
    finally:
        seg.prob_thd, seg.area_thd = 0.0, None


def _reference(seg, logits, ori, prob_thd=0.0, area_thd=None):
    """The post-processing as it was before the bounded path existed."""
    lg = F.interpolate(logits[None], size=ori, mode='bilinear', align_corners=False)
    scores = query_to_class_scores(lg, seg.query_to_class, seg.num_classes, seg.logit_scale)
    return scores[0], predict_labels(scores, prob_thd, area_thd, seg.bg_idx)[0]


THRESHOLDS = [dict(), dict(prob_thd=0.2), dict(area_thd=0.05), dict(prob_thd=0.1, area_thd=0.1)]


@pytest.mark.parametrize('thr', THRESHOLDS)
def test_normal_sizes_unchanged(seg, thr):
    g = torch.Generator().manual_seed(1)
    img = torch.rand(3, 48, 64, generator=g) * 255
    for ori in [(48, 64), (75, 101), (30, 40)]:
        assert postprocess.fits_full_resolution(seg.query_to_class.numel(), ori)
        scores, labels, logits = _predict(seg, img, ori, **thr)
        want_s, want_l = _reference(seg, logits, ori, **thr)
        assert torch.equal(scores, want_s) and torch.equal(labels, want_l), (ori, thr)


@pytest.mark.parametrize('thr', THRESHOLDS)
def test_huge_path_same_labels_scores_at_working_size(seg, thr, monkeypatch):
    # Pretend (150, 190) is huge: bands of 3 output rows.
    monkeypatch.setattr(postprocess, 'FULL_RES_MAX_ELEMENTS', 1000)
    monkeypatch.setattr(postprocess, 'TILE_MAX_ELEMENTS', 60 * 190 * 3)
    g = torch.Generator().manual_seed(2)
    img = torch.rand(3, 48, 64, generator=g) * 255
    ori = (150, 190)
    scores, labels, logits = _predict(seg, img, ori, **thr)
    want_s, want_l = _reference(seg, logits, ori, **thr)
    assert labels.shape == ori and labels.dtype == torch.int64
    # scores: the working-resolution class scores (a shape unlike pred_sem_seg's is the flag)
    assert scores.shape == (21, 48, 64)
    assert torch.equal(scores, query_to_class_scores(logits[None], seg.query_to_class, 21,
                                                     seg.logit_scale)[0])
    differ = labels != want_l
    if differ.any():  # only float ties of the bilinear weights may flip
        top2 = want_s.topk(2, dim=0).values
        assert (top2[0] - top2[1])[differ].max() < 1e-5
    assert differ.float().mean() < 1e-3
    assert len(torch.unique(want_l)) > 1  # not a trivial map


def test_benchmark_memory_bound(tmp_path):
    """tools/benchmark.py --memory at 1536 x 1536 (voc21: 60 queries, just past the plain
    path): the table is written (umask mode, item 13) and the peak RSS increase stays within
    the documented bound."""
    assert not postprocess.fits_full_resolution(60, (1536, 1536))
    out = tmp_path / 'mem.md'
    h0 = w0 = 1536
    rc, stdout, stderr = run([osp.join(TOOLS, 'benchmark.py'), '--memory', '--memory-size',
                              str(h0), str(w0), '--memory-classes', 'voc21', '--memory-out',
                              str(out)], timeout=500)
    assert rc == 0, stdout[-2000:] + stderr[-3000:]
    row = [ln for ln in stdout.splitlines() if ln.startswith('| voc21 |')]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip('|').split('|')]
    increase_mb, full_mb = float(cells[5]), float(cells[8])
    assert cells[6] == f'1x{h0}x{w0}' and cells[7] == '21x448x448'
    # documented bound: ~6 band tensors + int64 labels (+ working-size scores, small)
    bound_mb = (6 * postprocess.TILE_MAX_ELEMENTS * 4 + 8 * h0 * w0) / 2 ** 20
    assert increase_mb < bound_mb + 150, (increase_mb, bound_mb)
    # the unbounded path holds >= 2 full-size tensors at once (upsampled logits + softmax)
    assert increase_mb < full_mb
    assert out.read_text() in stdout
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ['mem.md']  # no temporary left
