"""Text classifier computed once per process per (text tower, vocabulary, templates): shared by
two segmentors, and by the fit's models and the evaluated model, built on the same weights."""
import torch

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
from gpua_mmseg.models.clip import CLIPEncoder, build_clip_encoder, tiny_clip_model_cfg
from gpua_mmseg.models.segmentor import GPUASegmentor

CLIP = dict(name='tiny', pretrained=None, model_cfg=tiny_clip_model_cfg())
NAMES = 'cat, kitty; sofa; background'
TEMPLATES = ['a photo of a {}.', 'art of the {}.']


def _count(monkeypatch):
    from gpua_mmseg.models import text_classifier
    text_classifier._CACHE.clear()                # as in a fresh process
    calls = []
    orig = CLIPEncoder.encode_text

    def counting(self, tokens):
        calls.append(tokens.shape[0])
        return orig(self, tokens)
    monkeypatch.setattr(CLIPEncoder, 'encode_text', counting)
    return calls


def _segmentor(seed, **kw):
    torch.manual_seed(seed)  # random weights, seeded as the demo / fit builds them
    return GPUASegmentor(clip=dict(CLIP, **kw), clip_mode='sclip', class_names=NAMES,
                         templates=TEMPLATES, slide_crop=32, slide_stride=16).eval()


def test_two_segmentors_on_the_same_weights_encode_once(monkeypatch):
    calls = _count(monkeypatch)
    a, b = _segmentor(0), _segmentor(0)
    assert a.clip_encoder is not b.clip_encoder
    ea, eb = a.get_text_embeddings(), b.get_text_embeddings()
    assert calls == [4 * 2]                       # 4 queries x 2 templates, once
    torch.testing.assert_close(ea, eb, rtol=0, atol=0)
    c = _segmentor(1)                             # other random weights: their own encoding
    ec = c.get_text_embeddings()
    assert len(calls) == 2 and not torch.allclose(ec, ea, atol=1e-3)
    # same weights under the other activation: other embeddings, never served from the cache
    torch.manual_seed(0)
    gelu = build_clip_encoder(dict(CLIP, model_cfg=tiny_clip_model_cfg(quick_gelu=False)))
    qg = build_clip_encoder(CLIP)
    gelu.model.load_state_dict(a.clip_encoder.model.state_dict())
    qg.model.load_state_dict(a.clip_encoder.model.state_dict())
    from gpua_mmseg.models.text_classifier import TextClassifier
    assert TextClassifier(qg, NAMES, TEMPLATES).embeddings is not None and len(calls) == 2
    e_gelu = TextClassifier(gelu, NAMES, TEMPLATES).embeddings
    assert len(calls) == 3 and not torch.allclose(e_gelu, ea, atol=1e-4)


def test_fit_models_then_evaluated_model_encode_once(monkeypatch):
    from mmengine.config import Config
    from mmseg.registry import MODELS

    from gpua_mmseg.fitting import build_fit_models
    from gpua_mmseg.fitting.prototypes import build_prototypes
    calls = _count(monkeypatch)
    model = dict(type='GPUASegmentor', clip=CLIP, clip_mode='sclip', class_names=NAMES,
                 templates=TEMPLATES, slide_crop=32, slide_stride=16,
                 vfm=dict(name='vit_base_patch16_dinov3.lvd1689m', pretrained=False,
                          model_kwargs=dict(embed_dim=24, depth=1, num_heads=2, img_size=32)),
                 decode_head=dict(type='GPUAHead', alignment_path='/nonexistent.safetensors'))
    cfg = Config(dict(model=model))
    seg, _ = build_fit_models(cfg, seed=0)        # what tools/fit_alignment.py builds
    T, _, _ = build_prototypes(seg, 'query')      # the fit's text prototypes
    assert calls == [4 * 2]
    torch.manual_seed(0)                          # the model evaluated afterwards, same process
    plain = MODELS.build(dict(model, vfm=None, decode_head=None)).eval()
    torch.testing.assert_close(torch.nn.functional.normalize(plain.get_text_embeddings(), dim=-1),
                               T, rtol=0, atol=1e-6)
    assert calls == [4 * 2]
