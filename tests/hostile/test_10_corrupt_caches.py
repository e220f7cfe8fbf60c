"""Issue 11 item 10: a corrupt cached demo map is refitted (demo --fit), and a truncated feature
shard is named by tools/fit_alignment.py and re-extracted: the resumed fit gives the same map."""
import torch

from gpua_mmseg.alignment import AlignmentMap
from test_demo import demo  # noqa: F401  (the demo module fixture)
from test_issue8_part_a import _demo_args, _fit_random, gpua_setup  # noqa: F401


def test_corrupt_cached_demo_map_is_refitted(demo, gpua_setup, tmp_path, capsys):  # noqa: F811
    cfg, imgs, cache, _ = gpua_setup
    art = _fit_random(demo, gpua_setup, tmp_path / 'o1', 'cat; background')
    with open(art, 'r+b') as f:  # truncated by a crash / full disk
        f.truncate(100)
    capsys.readouterr()
    assert demo.main(_demo_args(cfg, imgs, tmp_path / 'o2', 'cat; background', '--weights',
                                'random', '--fit')) == 0
    captured = capsys.readouterr()
    assert 'ignoring the cached GPUA artifact' in captured.err and art in captured.err
    assert 'fitting a GPUA map' in captured.out
    AlignmentMap.load(art)  # rewritten whole
    assert sorted(p.name for p in (tmp_path / 'o2').iterdir()) == [
        'chelsea_labels.png', 'chelsea_overlay.png', 'coffee_labels.png', 'coffee_overlay.png']


def test_truncated_feature_shard_is_named_and_reextracted(fit_runs):
    r = fit_runs.runs['resumed']
    shard = fit_runs.shards[0]
    assert r.rc == 0, r.err[-3000:]
    line = [ln for ln in r.err.splitlines() if 'feature shard' in ln]
    assert line and str(shard) in line[0] and 'corrupt' in line[0] and 're-extracting' in line[0]
    assert len(fit_runs.shards) == 3 and len(line) == 1  # only the damaged one
    from safetensors.torch import load_file
    assert load_file(str(shard))['clip'].shape[0] > 0  # complete again
    # the shard content depends only on its image and the weights: the same map as before
    assert torch.equal(AlignmentMap.load(str(fit_runs.art)).W, fit_runs.first_w)
