"""Text classifier: name sources, synonyms, template averaging, caching, class-score max."""
import pytest
import torch

from gpua_mmseg.models import text_classifier as tcm
from gpua_mmseg.models.clip import tiny_clip_model_cfg as tcm_tiny
from gpua_mmseg.models.templates import OPENAI_IMAGENET_TEMPLATES, resolve_templates
from gpua_mmseg.models.text_classifier import TextClassifier, class_scores
from gpua_mmseg.vocabulary import Vocabulary

TEMPLATES = ['a photo of a {}.', 'art of the {}.']


def test_templates():
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80 == len(set(OPENAI_IMAGENET_TEMPLATES))
    assert resolve_templates('openai_imagenet')[0] == 'a bad photo of a {}.'
    assert all(t.count('{}') == 1 for t in OPENAI_IMAGENET_TEMPLATES)
    with pytest.raises(ValueError, match='known'):
        resolve_templates('imagenet81')
    with pytest.raises(ValueError, match='placeholder'):
        resolve_templates(['no placeholder'])


def test_name_sources(tmp_path):
    f = tmp_path / 'names.txt'
    f.write_text('sky, wall, tree\naeroplane, airplane\ncat\n\n')
    assert Vocabulary.parse(str(f)).classes == [['sky', 'wall', 'tree'], ['aeroplane', 'airplane'],
                                                ['cat']]
    assert Vocabulary.parse([['a', 'b'], 'c']).classes == [['a', 'b'], ['c']]
    with pytest.raises(FileNotFoundError, match=r"'voc99.txt'.*shipped key"):
        Vocabulary.parse('voc99.txt')
    with pytest.warns(UserWarning, match="'voc99' is neither a shipped class-name key"):
        assert len(Vocabulary.parse('voc99')) == 1
    (tmp_path / 'gap.txt').write_text('a\n\nb\n')
    with pytest.raises(ValueError, match='class 1 of file .*gap.txt is empty'):
        Vocabulary.parse(str(tmp_path / 'gap.txt'))
    with pytest.raises(ValueError, match='class 1'):
        Vocabulary.parse(['a', []])


def test_embeddings_match_manual_and_are_cached(make_tiny_clip):
    enc = make_tiny_clip(seed=5)
    names = [['cat', 'kitty'], 'dog']
    calls = []
    orig = enc.encode_text
    enc.encode_text = lambda tok: (calls.append(tok.shape[0]), orig(tok))[1]
    tc = TextClassifier(enc, names, TEMPLATES)
    assert tc.queries == ['cat', 'kitty', 'dog'] and tc.query_to_class.tolist() == [0, 0, 1]
    e = tc.embeddings
    assert e.shape == (3, 32)
    with torch.no_grad():
        for i, q in enumerate(tc.queries):
            t = orig(enc.tokenize([tmpl.format(q) for tmpl in TEMPLATES]))
            ref = (t / t.norm(dim=-1, keepdim=True)).mean(0)
            torch.testing.assert_close(e[i], ref / ref.norm(), rtol=1e-5, atol=1e-6)
    n_calls = len(calls)
    assert TextClassifier(enc, names, TEMPLATES).embeddings is e        # cached across instances
    assert len(calls) == n_calls
    other = TextClassifier(enc, ['dog'], TEMPLATES).embeddings          # other vocabulary: computed
    torch.testing.assert_close(other[0], e[2])
    with torch.no_grad():                                               # new weights: recomputed
        enc.model.text_projection.add_(torch.randn_like(enc.model.text_projection))
    e2 = tc.embeddings
    assert len(calls) == n_calls + 2 and not torch.allclose(e2, e, atol=1e-3)


def test_class_scores_max_over_synonyms():
    q2c = torch.tensor([0, 0, 1, 2, 2, 2])
    s = torch.tensor([[0.1, 0.5, 0.2, 0.05, 0.3, 0.2], [0.9, 0.0, 0.7, 0.1, 0.1, 0.8]])
    out = class_scores(s[:, None, :].expand(2, 4, 6), q2c, 3)
    assert out.shape == (2, 4, 3)
    torch.testing.assert_close(out[:, 0], torch.tensor([[0.5, 0.2, 0.3], [0.9, 0.7, 0.8]]))
    with pytest.raises(ValueError, match='6 queries'):
        class_scores(torch.rand(2, 5), q2c, 3)


def test_disk_cache_for_pretrained_weights(make_tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setenv('GPUA_MMSEG_CACHE', str(tmp_path))
    monkeypatch.delenv('GPUA_MMSEG_TEXT_CACHE', raising=False)
    folder = tmp_path / 'text_embeddings'

    def counted(enc):
        calls = []
        orig = enc.encode_text
        enc.encode_text = lambda tok: (calls.append(tok.shape[0]), orig(tok))[1]
        return calls

    tcm._CACHE.clear()                                   # as in a fresh process
    rnd = make_tiny_clip(seed=5)                         # random init: never written to disk
    TextClassifier(rnd, ['cat'], TEMPLATES).embeddings
    assert not folder.exists()
    first = make_tiny_clip(seed=5)
    first.info['pretrained'] = '/weights/tiny.pt'        # as if loaded from a checkpoint
    calls = counted(first)
    e = TextClassifier(first, ['cat', 'dog'], TEMPLATES).embeddings
    assert calls and len(list(folder.iterdir())) == 1
    # a new process would build a new encoder with the same weights: served from disk
    tcm._CACHE.clear()                                   # (a new process)
    second = make_tiny_clip(seed=5)
    second.info['pretrained'] = '/weights/tiny.pt'
    calls2 = counted(second)
    torch.testing.assert_close(TextClassifier(second, ['cat', 'dog'], TEMPLATES).embeddings, e)
    assert calls2 == []
    # other weights -> other key -> recomputed; switched off by env -> nothing written
    third = make_tiny_clip(seed=6)
    third.info['pretrained'] = '/weights/tiny.pt'
    calls3 = counted(third)
    TextClassifier(third, ['cat', 'dog'], TEMPLATES).embeddings
    assert calls3 and len(list(folder.iterdir())) == 2
    monkeypatch.setenv('GPUA_MMSEG_TEXT_CACHE', '0')
    fourth = make_tiny_clip(seed=7)
    fourth.info['pretrained'] = '/weights/tiny.pt'
    TextClassifier(fourth, ['cat', 'dog'], TEMPLATES).embeddings
    assert len(list(folder.iterdir())) == 2


def test_too_long_class_names_warn_once(make_tiny_clip):
    """Issue 11 item 4: names longer than the text context are named with their token count,
    once per encoding; names that become identical once cut are reported as such."""
    from gpua_mmseg.models.text_classifier import TextTruncationWarning, check_truncation
    tcm._CACHE.clear()
    enc = make_tiny_clip(seed=8, model_cfg=tcm_tiny(context_length=12))
    long_car = 'very ' * 10 + 'red car'
    long_bus = 'very ' * 10 + 'red bus'
    names = [['cat'], [long_car], [long_bus, 'bus'], ['cup', 'very ' * 10 + 'blue cup']]
    with pytest.warns(TextTruncationWarning) as rec:
        TextClassifier(enc, names, ['a {}.']).embeddings
        TextClassifier(enc, names, ['a {}.']).embeddings       # cached: no second warning
    assert len(rec) == 1
    msg = str(rec[0].message)
    n = len(enc._tokenizer.encode('a ' + long_car + '.')) + 2
    assert f"class {long_car!r}: its longest prompt has {n} tokens" in msg and n > 12
    assert 'text context of 12 tokens' in msg
    assert f"class 'cup' (query 'very very" in msg               # synonym: named with its class
    assert "'cat'" not in msg and "query 'bus'" not in msg      # names that fit are not listed
    assert (f"queries {long_car!r} and {long_bus!r} are identical after truncation" in msg
            and f"can never make class {long_bus!r} win over class {long_car!r}" in msg)
    # prompts that fit exactly (12 tokens) are not cut
    fits = 'x ' * 7 + 'y'
    assert len(enc._tokenizer.encode('a ' + fits + '.')) + 2 == 12
    assert check_truncation(enc, [[fits], ['cat']], ['a {}.'], warn=False) == []
