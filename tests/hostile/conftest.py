"""Fixtures of the hostile-input tests (helpers: _hostile.py)."""
import os.path as osp
import runpy

import pytest
from _hostile import TOOLS, tiny_clip_options


@pytest.fixture(scope='session')
def toy_voc(tmp_path_factory):
    """A one-image VOC-layout dataset (32 x 40 px)."""
    root = tmp_path_factory.mktemp('hostile_toy') / 'toy'
    main = runpy.run_path(osp.join(TOOLS, 'make_toy_dataset.py'))['main']
    assert main([str(root), '--n', '1', '--size', '32', '40']) in (0, None)
    return root


@pytest.fixture(scope='session')
def tiny_sclip_options(toy_voc):
    return tiny_clip_options() + [f'test_dataloader.dataset.data_root={toy_voc}',
                                  'test_dataloader.num_workers=0',
                                  'test_dataloader.dataset.pipeline.1.scale=(2048,32)']


# ---------------------------------------------------------------- demo / fit runs (H7)
# Each subprocess of a CLI costs ~10 s of imports on this machine, so the runs the item tests
# look at are started together, once per session, and the tests share their results.
import os  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from _hostile import (DEMO, FIT, GPUA_CONFIG, LONG_NAME, dead_pid, finish,  # noqa: E402
                      save_tiny_clip_weights, start, start_patched, tiny_demo_config)

TEXT_CACHE_FULL = ('import safetensors, safetensors.torch\n'
                   'def _full(*a, **k):\n'
                   '    raise safetensors.SafetensorError("No space left on device (os error 28)")\n'
                   'safetensors.torch.save_file = _full\n')
PNG_DISK_FULL = ('import errno, PIL.Image\n'
                 'def _full(self, fp, *a, **k):\n'
                 '    raise OSError(errno.ENOSPC, "No space left on device", str(fp))\n'
                 'PIL.Image.Image.save = _full\n')


def _hostile_images(imgs):
    """A folder of good and bad images (names say which); returns the folder."""
    import numpy as np
    import skimage.data
    from PIL import Image
    imgs.mkdir()
    photo = skimage.data.chelsea()
    g16 = np.tile(np.linspace(0, 65535, 80).round().astype(np.uint16), (48, 1))
    Image.fromarray(g16).save(imgs / 'grey16.png')                       # 16-bit grey
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64 wide x 40 high; shown rotated: 40 wide x 64 high
    Image.fromarray(photo[:40, :64]).save(imgs / 'rotated.jpg', exif=exif.tobytes(), quality=95)
    Image.fromarray(photo[:48, :64]).save(imgs / 'x.png')                # same stem, 64 x 48
    Image.fromarray(photo[100:164, 100:148]).save(imgs / 'x.jpg')        # same stem, 48 x 64
    (imgs / 'empty.png').write_bytes(b'')
    (imgs / 'notes.png').write_text('not an image')
    data = (imgs / 'x.png').read_bytes()
    (imgs / 'cut.png').write_bytes(data[:len(data) // 2])
    os.symlink(imgs / 'loop.png', imgs / 'loop.png')
    os.symlink(imgs.parent / 'gone.png', imgs / 'dangling.png')
    return imgs


@pytest.fixture(scope='session')
def demo_runs(tmp_path_factory):
    """``name -> SimpleNamespace(rc, out, err, ...)`` of tools/demo.py runs on hostile input.

    ``batch``: a folder of good and bad images, real (tiny) CLIP weights so that the text
    embeddings go to the disk cache, whose disk is full (save_file raises SafetensorError), a
    class name longer than the 16-token text context, stale temporary files of a killed run in
    ``--out``, umask 022.  The others are single bad inputs that must exit 2.
    """
    from test_12_cli_errors import _readonly_dir
    root = tmp_path_factory.mktemp('demo_runs')
    imgs = _hostile_images(root / 'imgs')
    cfg = tiny_demo_config(root)
    gpua_cfg = tiny_demo_config(root, gpua_art=root / 'no_config_artifact.safetensors')
    weights = save_tiny_clip_weights(root / 'clip.safetensors')
    out = root / 'out'
    out.mkdir()
    stale = [out / f'.x_png_overlay.png.{dead_pid()}.k2j3h4.tmp',   # pid of a dead writer
             out / '.old_labels.png.q8w7e6.tmp']                    # older, pid-less naming
    for p in stale:
        p.write_bytes(b'half a png')
    os.utime(stale[1], (time.time() - 3 * 86400,) * 2)
    live = out / f'.busy_overlay.png.{os.getpid()}.a1b2c3.tmp'      # a writer still running
    live.write_bytes(b'being written')
    cache = root / 'cache'
    tiny = ['--config', cfg, '--weights', 'random', '--device', 'cpu']
    procs = {'batch': start_patched(
        TEXT_CACHE_FULL, DEMO, [imgs, '--config', cfg, '--clip-weights', weights, '--classes',
                                f'cat; {LONG_NAME}; background', '--out', out, '--alpha', '0',
                                '--device', 'cpu'],
        env_extra=dict(GPUA_MMSEG_CACHE=str(cache)), umask=0o022)}
    single = {
        'empty classes': [imgs / 'x.png', '--classes', ''] + tiny,
        'zero-byte image': [imgs / 'empty.png'] + tiny,
        'not an image': [imgs / 'notes.png'] + tiny,
        'symlink loop': [imgs / 'loop.png'] + tiny,
        'read-only out': [imgs / 'x.png'] + tiny,
        'missing clip weights': [imgs / 'x.png', '--clip-weights', root / 'no' / 'ViT-B-16.pt'],
        'bad fit options': [imgs / 'x.png', '--config', gpua_cfg, '--weights', 'random',
                            '--fit', '--fit-options', 'refine_steps=-1'],
        'unknown fit options': [imgs / 'x.png', '--config', gpua_cfg, '--weights', 'random',
                                '--fit', '--fit-options', 'refine_stepz=5'],
    }
    outs = {name: root / f'out_{i}' for i, name in enumerate(single)}
    outs['read-only out'] = _readonly_dir(root)
    for name, argv in single.items():
        procs[name] = start([DEMO] + [str(a) for a in argv] + ['--out', str(outs[name])],
                            env_extra=dict(GPUA_MMSEG_CACHE=str(root / f'cache_{name[:5]}')))
    outs['disk full'] = root / 'out_full'
    procs['disk full'] = start_patched(PNG_DISK_FULL, DEMO, [imgs / 'x.png', imgs / 'x.jpg',
                                                             '--out', outs['disk full']] + tiny)
    runs = {}
    for name, proc in procs.items():
        rc, o, e = finish(proc)
        runs[name] = SimpleNamespace(rc=rc, out=o, err=e, outdir=outs.get(name, out),
                                     cache=root / f'cache_{name[:5]}')
    runs['batch'].__dict__.update(imgs=imgs, stale=stale, live=live, cache=cache)
    return runs


def _fit_cmd(data_root, out, *extra):
    from _hostile import tiny_clip_options
    tiny_vfm = ['model.vfm.pretrained=False', 'model.vfm.model_kwargs.embed_dim=24',
                'model.vfm.model_kwargs.depth=1', 'model.vfm.model_kwargs.num_heads=2',
                'model.vfm.model_kwargs.img_size=64']
    return ([FIT, GPUA_CONFIG, '--out', str(out), '--fit-options', 'refine_steps=5',
             'outer_iters=2', *extra, '--cfg-options'] + tiny_clip_options() + tiny_vfm
            + [f'test_dataloader.dataset.data_root={data_root}', 'test_dataloader.num_workers=0',
               'test_dataloader.dataset.pipeline.1.scale=(2048,64)'])


@pytest.fixture(scope='session')
def fit_runs(tmp_path_factory):
    """tools/fit_alignment.py on a 3-image toy dataset (64 x 96): ``plot`` (the diagnostics
    PNG cannot be written: a folder sits at its path), then ``resumed`` (same command after
    its feature shard 0 was truncated), ``bad options`` and ``zero-byte image`` (one dataset
    image emptied) side by side."""
    import shutil
    root = tmp_path_factory.mktemp('fit_runs')
    main = runpy.run_path(osp.join(TOOLS, 'make_toy_dataset.py'))['main']
    ds = root / 'toy'
    assert main([str(ds), '--n', '3', '--size', '64', '96']) in (0, None)
    ds0 = root / 'toy_zero'
    shutil.copytree(ds, ds0)
    emptied = sorted((ds0 / 'JPEGImages').iterdir())[1]
    emptied.write_bytes(b'')
    art = root / 'plot' / 'map.safetensors'
    (root / 'plot' / 'map_diagnostics.png').mkdir(parents=True)
    procs = {'plot': start(_fit_cmd(ds, art)),
             'bad options': start(_fit_cmd(ds, root / 'opts' / 'map.safetensors',
                                           'refine_steps=-1')),
             'zero-byte image': start(_fit_cmd(ds0, root / 'zero' / 'map.safetensors'))}
    runs = {name: SimpleNamespace(**dict(zip(('rc', 'out', 'err'), finish(p))))
            for name, p in procs.items()}
    shards, first_w = [], None
    if runs['plot'].rc == 0:
        from gpua_mmseg.alignment import AlignmentMap
        first_w = AlignmentMap.load(str(art)).W.clone()
        shards = sorted((root / 'plot' / 'feature_cache').glob('*/shard_*.safetensors'))
        data = shards[0].read_bytes()
        shards[0].write_bytes(data[:len(data) // 2])  # a crash / full disk mid-write
        runs['resumed'] = SimpleNamespace(**dict(zip(('rc', 'out', 'err'),
                                                     finish(start(_fit_cmd(ds, art))))))
    return SimpleNamespace(runs=runs, root=root, art=art, emptied=emptied, dataset=ds,
                           shards=shards, first_w=first_w)
