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
