"""Short text forward: prompts run only up to the batch's last end-of-text token, equal to
open_clip's full-context ``encode_text``; prompts are encoded in length-sorted batches."""
import pytest
import torch
from open_clip.model import CustomTextCLIP

from gpua_mmseg.models.clip import CLIPEncoder, tiny_clip_model_cfg
from gpua_mmseg.models.text_classifier import encode_queries

PROMPTS = ['a', 'b c d', 'a photo of a very long and rather unusual thing with many words in it',
           'art of the dog.', 'x y']


def _seq_lengths(transformer):
    """Records the sequence length every call of ``transformer`` sees."""
    seen = []
    bf = getattr(transformer, 'batch_first', True)
    transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(args[0].shape[1 if bf else 0]), with_kwargs=True)
    return seen


@pytest.mark.parametrize('quick_gelu', [True, False])
def test_short_forward_equals_open_clip(make_tiny_clip, quick_gelu):
    enc = make_tiny_clip(seed=2, model_cfg=tiny_clip_model_cfg(quick_gelu=quick_gelu))
    assert {type(m).__name__ for m in enc.model.modules()} & {'QuickGELU', 'GELU'} == \
        {'QuickGELU' if quick_gelu else 'GELU'}
    tok = enc.tokenize(PROMPTS)
    seen = _seq_lengths(enc.model.transformer)
    with torch.no_grad():
        ours = enc.encode_text(tok)
        ref = enc.model.encode_text(tok)
    eot = int(tok.argmax(-1).max())
    # ours ran on the batch's last end-of-text position, open_clip on the full context
    assert seen == [eot + 1, 77] and eot + 1 < 77
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    with torch.no_grad():                     # each prompt alone (its own, shorter length)
        for i, p in enumerate(PROMPTS):
            torch.testing.assert_close(enc.encode_text(enc.tokenize([p]))[0], ref[i],
                                       rtol=0, atol=1e-5)


@pytest.mark.parametrize('text_cfg,short', [
    (dict(), True),
    (dict(pool_type='eos', eos_id=49407), True),
    (dict(pool_type='last'), False),           # reads the last slot: full context
    (dict(no_causal_mask=True), False),        # bidirectional: padding matters
])
def test_custom_text_clip(text_cfg, short):
    cfg = tiny_clip_model_cfg()
    cfg['text_cfg'].update(text_cfg)
    torch.manual_seed(4)
    model = CustomTextCLIP(**cfg).eval()
    enc = CLIPEncoder(model)
    tok = enc.tokenize(PROMPTS)
    seen = _seq_lengths(model.text.transformer)
    with torch.no_grad():
        ours = enc.encode_text(tok)
        ref = model.encode_text(tok)
    assert seen[0] == (int(tok.argmax(-1).max()) + 1 if short else 77)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_queries_in_length_sorted_short_batches(make_tiny_clip):
    enc = make_tiny_clip(seed=3)
    queries = ['cat', 'a very long winded name of some household object', 'dog', 'tv monitor']
    templates = ['a {}.', 'a photo of the big {} in the picture.']
    seen = _seq_lengths(enc.model.transformer)
    e = encode_queries(enc, queries, templates, batch_size=3)
    assert len(seen) == 3 and seen == sorted(seen)      # 8 prompts, shortest batch first
    lengths = sorted(int(n) for n in (enc.tokenize([t.format(q) for q in queries
                                                    for t in templates]) != 0).sum(1))
    assert seen == [lengths[2], lengths[5], lengths[7]]
    with torch.no_grad():                               # per query, open_clip's full forward
        for i, q in enumerate(queries):
            r = enc.model.encode_text(enc.tokenize([t.format(q) for t in templates]))
            r = (r / r.norm(dim=-1, keepdim=True)).mean(0)
            torch.testing.assert_close(e[i], r / r.norm(), rtol=0, atol=1e-5)
