"""tools/fit_alignment.py on a GPUA + ProxyCLIP config (tiny random CLIP and DINOv3, toy data):
the fit must build ProxyCLIP with its VFM (its attention reads the VFM tokens), share that one
VFM for the GPUA rows, and write an artifact the GPUA + ProxyCLIP model accepts."""
import os.path as osp
import runpy
import subprocess
import sys

import pytest
import torch

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
from gpua_mmseg.alignment import AlignmentMap

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PROXY_CFG = osp.join(ROOT, 'configs/gpua/gpua_proxyclip_dinov3_vitb16_voc21.py')


def write_tiny_config(tmp_path, data_root, base=PROXY_CFG):
    """``base`` with tiny random encoders on ``data_root``, dumped to a config file."""
    from mmengine.config import Config

    from gpua_mmseg.models.clip import tiny_clip_model_cfg
    cfg = Config.fromfile(base)
    clip = dict(name='tiny', pretrained=None, model_cfg=tiny_clip_model_cfg(
        width=32, layers=3, heads=2, embed_dim=16, text_width=32, text_layers=1, text_heads=2,
        context_length=16))
    cfg.merge_from_dict({'model.clip': clip, 'model.vfm.pretrained': False,
                         'model.vfm.model_kwargs': dict(embed_dim=24, depth=1, num_heads=2,
                                                        img_size=64),
                         'test_dataloader.dataset.data_root': str(data_root),
                         'test_dataloader.dataset.pipeline.1.scale': (2048, 64),
                         'model.templates': ['{}'], 'model.slide_crop': 64,
                         'model.slide_stride': 32})
    path = str(tmp_path / 'tiny_gpua_proxyclip.py')
    cfg.dump(path)
    return path


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp('fitproxy') / 'toy'
    r = subprocess.run([sys.executable, osp.join(ROOT, 'tools/make_toy_dataset.py'), str(out),
                        '--n', '2', '--size', '64', '96'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def _main():
    # the tool as a script (no sys.path edit), as tests/test_gpua_e2e.py does
    return runpy.run_path(osp.join(ROOT, 'tools', 'fit_alignment.py'))['main']


def test_build_fit_models_keeps_proxyclips_vfm(toy, tmp_path):
    from mmengine.config import Config

    from gpua_mmseg.fitting import build_fit_models
    from gpua_mmseg.fitting.extract import extract_image_features
    cfg = Config.fromfile(write_tiny_config(tmp_path, toy))
    seg, vfm = build_fit_models(cfg, 'cpu', seed=0)
    assert seg.clip_mode == 'proxyclip'
    assert seg.vfm_encoder is vfm   # one VFM: the fit's rows and ProxyCLIP's attention
    img = torch.rand(3, 64, 96)
    f = extract_image_features(seg, vfm, img)
    # the CLIP rows are ProxyCLIP's own patch features (attention from these VFM tokens)
    from gpua_mmseg.models.sliding import iter_crop_batches
    (batch, chunk), = list(iter_crop_batches([img], 64, 32, 32, size_divisor=16))
    tok = vfm.patch_features(vfm.normalize(batch))
    want = seg.clip_encoder.patch_features(seg.clip_encoder.normalize(batch), vfm_tokens=tok)
    order = sorted(range(len(chunk)), key=lambda j: chunk[j].box)
    want = torch.cat([want[j].reshape(-1, want.shape[-1]) for j in order])
    torch.testing.assert_close(f['clip'], want, rtol=0, atol=1e-6)


def test_fit_alignment_cli_on_gpua_proxyclip(toy, tmp_path, capsys):
    cfg_path = write_tiny_config(tmp_path, toy)
    out = str(tmp_path / 'proxy.safetensors')
    rc = _main()([cfg_path, '--out', out, '--cache-dir', str(tmp_path / 'cache'), '--no-plot',
                  '--fit-options', 'refine_steps=5', 'outer_iters=2'])
    assert rc == 0, capsys.readouterr().err
    amap = AlignmentMap.load(out)
    assert amap.meta['clip_mode'] == 'proxyclip'
    assert amap.meta['n_samples'] == 2 * 2 * 16   # 2 images x 2 crops x 4x4 patches
    # the GPUA + ProxyCLIP model takes the map (identity: same encoders, mode, vocabulary)
    from mmengine.config import Config
    from mmseg.registry import MODELS
    cfg = Config.fromfile(cfg_path)
    model_cfg = cfg.model.to_dict()
    model_cfg['decode_head']['alignment_path'] = out
    torch.manual_seed(0)
    seg = MODELS.build(model_cfg).eval()
    assert seg.decode_head is not None and seg.vfm_encoder is not None
    logits = seg.encode_decode(torch.randint(0, 255, (1, 3, 64, 96)).float())
    assert logits.shape[-2:] == (64, 96) and torch.isfinite(logits).all()
