"""Regenerates proxyclip_regression.safetensors and proxyclip_regression_peer_diffs.json by hand
(never run by the tests).  The stored logits are the *public ProxyCLIP code's* numbers, so the test
(tests/models/test_proxyclip_regression.py) compares this implementation with that code directly.

How the numbers were produced (two steps, the second outside this repository):

1. ``.venv/bin/python tests/data/proxyclip_regression_make.py inputs /tmp/peer/parity`` writes, per
   case, seeded random weights (open_clip ViT with QuickGELU; timm DINOv3 / DINOv2; every tensor
   rounded to fp16, loaded in fp32), seeded blocky uint8 images (224x224 and 224x336, H x W) and
   random unit text embeddings: the ``tiny_*`` cases (stored in the repo) and the ``full_*``
   cases (ViT-B/16 + DINOv3 ViT-B/16 / DINOv2 ViT-B/14-reg4, not stored).
2. A harness in /tmp/peer (a checkout of github.com/mc-lan/ProxyCLIP at e7b767f, never copied
   here) imports that repository's own vendored ``open_clip`` (with its ``custom_attn``), loads
   the same CLIP weights, builds the VFM as the same timm model with the same weights and takes
   its features the way the public code takes them from the hub models
   (``get_intermediate_layers(x, reshape=True)[0]``: last block, final norm, prefix tokens
   dropped, [B, C, H, W] -- timm's ``forward_intermediates(indices=1, norm=True,
   output_fmt='NCHW', intermediates_only=True)``), normalises the input as the public code does
   (CLIP-normalised image -> un-normalised -> ImageNet-normalised), runs
   ``encode_image(img, external_feats, beta=1.2, gamma=3.0)`` one image at a time in fp32 on the
   CPU, L2-normalises and takes cosine logits against the same text embeddings on the VFM grid.
   For the non-square size two orientation slips of the public code are corrected in the harness
   (it computes the CLIP value grid as (W/p, H/p) and reshapes the logits to (H/p, H/p); its own
   evaluation only ever feeds square crops), and the positional embedding at non-native grids
   is interpolated to the target size as method.md §2 prescribes (the public code interpolates
   with DINO's ``scale_factor=(n + 0.1)/N`` trick; that difference is recorded separately in
   the JSON as ``*_their_pos_interp``).  The harness writes ``reference_outputs.safetensors``.
3. ``.venv/bin/python tests/data/proxyclip_regression_make.py finish /tmp/peer/parity`` computes
   our logits, records max |ours - reference| per case in the JSON, and stores the tiny cases'
   weights, images, text and *reference* logits.
"""
import json
import os
import os.path as osp
import sys

import torch
from safetensors.torch import load_file, save_file

HERE = osp.dirname(osp.abspath(__file__))
OUT = osp.join(HERE, 'proxyclip_regression.safetensors')
OUT_JSON = osp.join(HERE, 'proxyclip_regression_peer_diffs.json')
SIZES = {'sq': (224, 224), 'nonsq': (224, 336)}
N_TEXT = 5
BETA, GAMMA = 1.2, 3.0

VFMS = {
    'dinov3': 'vit_base_patch16_dinov3.lvd1689m',
    'dinov2': 'vit_base_patch14_reg4_dinov2',
}
TINY_VFM_KW = dict(embed_dim=32, depth=2, num_heads=2)


def tiny_clip_cfg():
    from gpua_mmseg.models.clip import tiny_clip_model_cfg
    return tiny_clip_model_cfg(image_size=224, patch_size=16, width=64, layers=3, heads=4,
                               embed_dim=32, text_width=32, text_layers=1, text_heads=2,
                               context_length=16)


def cases():
    """name -> (clip cfg dict for build_clip_encoder, vfm name, timm model_kwargs)."""
    out = {}
    for key, vfm in VFMS.items():
        out[f'tiny_{key}'] = (dict(name='tiny-proxyclip', model_cfg=tiny_clip_cfg()), vfm,
                              TINY_VFM_KW)
        out[f'full_{key}'] = (dict(name='ViT-B-16', pretrained=None, quick_gelu=True), vfm, {})
    return out


def images(seed=7):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for tag, (h, w) in SIZES.items():
        coarse = torch.rand(1, 3, h // 28, w // 28, generator=g)
        img = torch.nn.functional.interpolate(coarse, size=(h, w), mode='nearest')
        img = (img + 0.15 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)
        out[f'image.{tag}'] = (img[0] * 255).round().to(torch.uint8)
    return out


def build(case, tensors=None):
    from gpua_mmseg.models.clip import build_clip_encoder
    from gpua_mmseg.models.vfm import VFMEncoder
    clip_cfg, vfm_name, kw = cases()[case]
    clip = build_clip_encoder(clip_cfg, mode='proxyclip', mode_cfg=dict(beta=BETA, gamma=GAMMA))
    vfm = VFMEncoder(vfm_name, pretrained=False, model_kwargs=kw)
    if tensors is None:   # fresh seeded weights, fp16-rounded
        torch.manual_seed(sum(map(ord, case)))
        with torch.no_grad():   # perturb every tensor (norms, biases, layer scales included)
            for module in (clip.model.visual, vfm.model):
                for p in module.parameters():
                    p.add_(0.02 * torch.randn_like(p))
        sd_c = {k: v.half().float() for k, v in clip.model.visual.state_dict().items()}
        sd_v = {k: v.half().float() for k, v in vfm.model.state_dict().items()}
    else:
        sd_c = {k[len('clip.'):]: v for k, v in tensors.items() if k.startswith('clip.')}
        sd_v = {k[len('vfm.'):]: v for k, v in tensors.items() if k.startswith('vfm.')}
    clip.model.visual.load_state_dict(sd_c)
    vfm.model.load_state_dict(sd_v)
    return clip.eval(), vfm.eval(), sd_c, sd_v


def ours(clip, vfm, img_u8, text):
    from gpua_mmseg.models.backbone import query_logits
    x = img_u8[None].float() / 255
    with torch.no_grad():
        tokens = vfm.patch_features(vfm.normalize(x))
        feats = clip.patch_features(clip.normalize(x), vfm_tokens=tokens)
    return query_logits(feats, text)[0]            # [Q, hv, wv]


def make_inputs(folder):
    os.makedirs(folder, exist_ok=True)
    ims = images()
    for case in cases():
        clip, vfm, sd_c, sd_v = build(case)
        g = torch.Generator().manual_seed(11)
        text = torch.nn.functional.normalize(torch.randn(N_TEXT, clip.embed_dim, generator=g),
                                             dim=-1)
        t = {f'clip.{k}': v.contiguous() for k, v in sd_c.items()}
        t.update({f'vfm.{k}': v.contiguous() for k, v in sd_v.items()})
        t.update(ims)
        t['text'] = text
        meta = dict(case=case, clip_model_cfg=json.dumps(cases()[case][0].get('model_cfg')),
                    clip_name=cases()[case][0]['name'], vfm=cases()[case][1],
                    vfm_kwargs=json.dumps(cases()[case][2]), beta=str(BETA), gamma=str(GAMMA))
        save_file(t, osp.join(folder, f'inputs_{case}.safetensors'), metadata=meta)
        print('wrote', case)


def finish(folder):
    ref = load_file(osp.join(folder, 'reference_outputs.safetensors'))
    results, stored = {}, {}
    for case in cases():
        t = load_file(osp.join(folder, f'inputs_{case}.safetensors'))
        clip, vfm, _, _ = build(case, t)
        for tag in SIZES:
            mine = ours(clip, vfm, t[f'image.{tag}'], t['text'])
            theirs = ref[f'{case}.{tag}']
            rec = dict(max_abs_diff=float((mine - theirs).abs().max()),
                       reference_max_abs=float(theirs.abs().max()), shape=list(theirs.shape))
            if f'{case}.{tag}_their_pos_interp' in ref:
                rec['max_abs_diff_their_pos_interp'] = float(
                    (mine - ref[f'{case}.{tag}_their_pos_interp']).abs().max())
            results[f'{case}:{tag}'] = rec
            if case.startswith('tiny_'):
                stored[f'{case}.ref.{tag}'] = theirs.contiguous()
        if case.startswith('tiny_'):
            stored.update({f'{case}.{k}': v.contiguous() for k, v in t.items()
                           if k.startswith(('clip.', 'vfm.')) or k == 'text'})
    stored.update(images())
    save_file(stored, OUT)
    import open_clip
    import timm
    with open(OUT_JSON, 'w') as f:
        json.dump(dict(
            description=('Max abs differences of ProxyCLIP patch logits (cosine against random '
                         'unit text embeddings, on the VFM grid) between gpua_mmseg and the public '
                         'code (github.com/mc-lan/ProxyCLIP), same fp16-rounded random weights, '
                         'CPU fp32, batch 1. See proxyclip_regression_make.py for the procedure.'),
            reference='mc-lan/ProxyCLIP@e7b767f', torch=torch.__version__,
            open_clip=open_clip.__version__, timm=timm.__version__, beta=BETA, gamma=GAMMA,
            results=results), f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] not in ('inputs', 'finish'):
        sys.exit('usage: proxyclip_regression_make.py {inputs|finish} FOLDER')
    (make_inputs if sys.argv[1] == 'inputs' else finish)(sys.argv[2])
