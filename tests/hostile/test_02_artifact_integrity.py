"""Issue 11 item 2: corrupt alignment artifacts are refused on load, each with one message that
names the file and the fix (checksum, orthogonality, finiteness, metadata consistency)."""
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from gpua_mmseg.alignment import AlignmentMap
from gpua_mmseg.alignment.artifact import ORTHOGONALITY_TOL
from gpua_mmseg.vocabulary import Vocabulary

VOCAB = Vocabulary.parse('cat, kitty; sofa; background')


def _good(tmp_path, name='good.safetensors'):
    W = torch.linalg.qr(torch.randn(12, 8, generator=torch.Generator().manual_seed(0),
                                    dtype=torch.float64))[0].float()
    meta = dict(vocabulary=VOCAB.classes, vocab_hash=VOCAB.hash, n_prototypes=4,
                prototype_mode='query', identity=dict(vfm='v', vocab_hash=VOCAB.hash))
    path = str(tmp_path / name)
    AlignmentMap(W, meta, mu_v=torch.zeros(12), csls_r=torch.zeros(4)).save(path)
    return path


def _rewrite(path, out, tensors=None, meta=None, header=None):
    """Write ``out`` from ``path`` with some tensors / metadata replaced, as an attacker or a
    bad disk would (the checksum is not updated unless ``meta`` says so)."""
    from safetensors import safe_open
    with safe_open(path, framework='pt') as f:
        old_header = f.metadata()
    t = dict(load_file(path))
    t.update(tensors or {})
    m = json.loads(old_header['gpua_mmseg'])
    m.update(meta or {})
    save_file(t, out, metadata=header or {'gpua_mmseg': json.dumps(m)})
    return out


def _refused(path, *words):
    with pytest.raises(ValueError) as e:
        AlignmentMap.load(path)
    msg = str(e.value)
    assert path in msg and 'efit' in msg, msg
    for w in words:
        assert w in msg, msg


def test_good_artifact_loads_without_warnings(tmp_path):
    path = _good(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        amap = AlignmentMap.load(path)
    assert amap.orthogonality_error() < 1e-5 and amap.vocabulary == VOCAB


@pytest.mark.parametrize('case', ['not_orthogonal', 'zero', 'nan_mu_v'])
def test_bad_tensors_with_a_matching_checksum_are_refused(tmp_path, case):
    """Tensors re-written with a fresh checksum (a buggy writer): the content checks act."""
    from gpua_mmseg.alignment.artifact import tensors_sha256
    t = load_file(_good(tmp_path))
    if case == 'not_orthogonal':
        t['W'] = t['W'] * 3.0
    elif case == 'zero':
        t['W'] = torch.zeros_like(t['W'])
    else:
        t['mu_v'][3] = float('nan')
    out = _rewrite(_good(tmp_path), str(tmp_path / f'{case}.safetensors'), tensors=t,
                   meta=dict(tensor_sha256=tensors_sha256(t)))
    _refused(out, 'non-finite' if case == 'nan_mu_v' else 'not orthogonal')


def test_bit_flip_fails_the_checksum(tmp_path):
    path = _good(tmp_path)
    raw = bytearray(open(path, 'rb').read())
    raw[-5] ^= 0x40  # inside the last tensor's data
    out = str(tmp_path / 'flipped.safetensors')
    open(out, 'wb').write(bytes(raw))
    _refused(out, 'checksum')


def test_edited_vocabulary_with_the_old_hash_is_refused(tmp_path):
    out = _rewrite(_good(tmp_path), str(tmp_path / 'edited.safetensors'),
                   meta=dict(vocabulary=[['dog', 'kitty'], ['sofa'], ['background']]))
    _refused(out, 'vocabulary', 'edited')


def test_metadata_that_is_a_json_list(tmp_path):
    out = _rewrite(_good(tmp_path), str(tmp_path / 'list.safetensors'),
                   header={'gpua_mmseg': json.dumps([1, 2, 3])})
    _refused(out, 'JSON list')


def test_older_artifact_without_checksum_loads_with_a_warning(tmp_path):
    from safetensors import safe_open
    path = _good(tmp_path)
    with safe_open(path, framework='pt') as f:
        m = json.loads(f.metadata()['gpua_mmseg'])
    m.pop('tensor_sha256')
    m['format_version'] = 1
    out = str(tmp_path / 'old.safetensors')
    save_file(dict(load_file(path)), out, metadata={'gpua_mmseg': json.dumps(m)})
    with pytest.warns(UserWarning, match='no tensor checksum'):
        amap = AlignmentMap.load(out)
    assert amap.orthogonality_error() <= ORTHOGONALITY_TOL
