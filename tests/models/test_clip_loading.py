"""Checkpoint formats: open_clip (torch / safetensors / wrapped), OpenAI plain and TorchScript."""
import pytest
import torch
from safetensors.torch import save_file

from gpua_mmseg.models.clip import build_clip_encoder, create_open_clip, tiny_clip_model_cfg


@pytest.fixture(scope='module')
def source():
    torch.manual_seed(0)
    model, _ = create_open_clip('tiny', None, model_cfg=tiny_clip_model_cfg(quick_gelu=False))
    return model


def _cfg(path, **kw):
    return dict(name='tiny', pretrained=str(path), model_cfg=tiny_clip_model_cfg(quick_gelu=False), **kw)


def _same(enc, model):
    for k, v in model.state_dict().items():
        torch.testing.assert_close(enc.model.state_dict()[k], v.to(enc.model.state_dict()[k].dtype),
                                   msg=k)


class _Node(torch.nn.Module):
    def forward(self, x):
        return x


def _scripted_holder(sd):
    """A TorchScript module whose state dict is ``sd`` under the same dotted keys, as in OpenAI's
    released archives (which also carry input_resolution / context_length / vocab_size)."""
    root = _Node()
    for key, v in sd.items():
        *path, leaf = key.split('.')
        m = root
        for p in path:
            if not hasattr(m, p):
                m.add_module(p, _Node())
            m = getattr(m, p)
        m.register_buffer(leaf, v)
    return torch.jit.script(root)


def test_open_clip_torch_and_wrapped_and_safetensors(source, tmp_path):
    sd = source.state_dict()
    torch.save(sd, tmp_path / 'a.pt')
    torch.save({'state_dict': {f'module.{k}': v for k, v in sd.items()}, 'epoch': 3}, tmp_path / 'b.pt')
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / 'c.safetensors'))
    for name in ('a.pt', 'b.pt', 'c.safetensors'):
        enc = build_clip_encoder(_cfg(tmp_path / name))
        _same(enc, source)
        assert enc.info['format'] in ('torch', 'safetensors')


def test_openai_fp16_plain_state_dict(source, tmp_path):
    sd = {k: v.half() for k, v in source.state_dict().items()}
    torch.save(sd, tmp_path / 'openai.pt')
    enc = build_clip_encoder(_cfg(tmp_path / 'openai.pt', quick_gelu=True))
    assert enc.info['quick_gelu'] and next(enc.parameters()).dtype == torch.float32
    for k, v in sd.items():
        torch.testing.assert_close(enc.model.state_dict()[k], v.float())


def test_openai_torchscript_archive(source, tmp_path):
    sd = {k: v.half() for k, v in source.state_dict().items()}
    extra = dict(input_resolution=torch.tensor(32), context_length=torch.tensor(77),
                 vocab_size=torch.tensor(49408))
    path = tmp_path / 'ViT-tiny.pt'
    _scripted_holder(dict(sd, **extra)).save(str(path))
    enc = build_clip_encoder(dict(name='tiny', pretrained=str(path),
                                  model_cfg=tiny_clip_model_cfg(quick_gelu=False)))
    assert enc.info['format'] == 'torchscript'
    assert enc.info['quick_gelu']      # TorchScript archives are OpenAI's: QuickGELU switched on
    assert type(enc.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == 'QuickGELU'
    for k, v in sd.items():
        torch.testing.assert_close(enc.model.state_dict()[k], v.float())


def test_openai_tag_uses_quickgelu_without_download(source, tmp_path, monkeypatch):
    """A tag goes through open_clip.create_model; QuickGELU follows the tag (open_clip only warns)."""
    import open_clip
    import open_clip.factory as factory
    path = tmp_path / 'w.pt'
    torch.save(source.state_dict(), path)
    cfg = tiny_clip_model_cfg(quick_gelu=False)
    monkeypatch.setitem(factory._MODEL_CONFIGS, 'tiny-tagged', cfg)
    tag = dict(url='', hf_hub='', quick_gelu=True, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

    def fake_cfg(name, t):
        return tag if (name, t) == ('tiny-tagged', 'openai') else {}
    monkeypatch.setattr(open_clip, 'get_pretrained_cfg', fake_cfg)
    monkeypatch.setattr(factory, 'get_pretrained_cfg', fake_cfg)
    monkeypatch.setattr(factory, 'download_pretrained', lambda c, cache_dir=None: str(path))
    import gpua_mmseg.weights as weights
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)        # no local copy: network allowed
    monkeypatch.setattr(weights, 'hub_reachable', lambda *a, **k: True)
    enc = build_clip_encoder(dict(name='tiny-tagged', pretrained='openai'))
    assert enc.info['quick_gelu'] and enc.info['format'] == 'tag'
    assert type(enc.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == 'QuickGELU'
    torch.testing.assert_close(enc.mean, torch.tensor([0.5, 0.5, 0.5]))
    _same(enc, source)


def test_errors(source, tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pt'):
        build_clip_encoder(_cfg(tmp_path / 'nope.pt'))
    bigger = tiny_clip_model_cfg(width=128, quick_gelu=False)
    torch.manual_seed(0)
    other, _ = create_open_clip('tiny', None, model_cfg=bigger)
    torch.save(other.state_dict(), tmp_path / 'w128.pt')
    with pytest.raises(ValueError, match=r"w128\.pt.*expected model 'tiny'.*shape mismatches"):
        build_clip_encoder(_cfg(tmp_path / 'w128.pt'))
    sd = dict(source.state_dict())
    sd.pop('visual.proj')
    torch.save(sd, tmp_path / 'missing.pt')
    with pytest.raises(ValueError, match='missing keys.*visual.proj'):
        build_clip_encoder(_cfg(tmp_path / 'missing.pt'))
    (tmp_path / 'junk.pt').write_text('not a checkpoint')
    with pytest.raises(ValueError, match='junk.pt'):
        build_clip_encoder(_cfg(tmp_path / 'junk.pt'))
