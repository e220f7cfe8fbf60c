"""Install with ``pip install -e .`` on top of an existing torch / mmcv(-lite) / mmseg stack.

Runtime requirements are deliberately loose and exclude torch and mmcv: we never force-reinstall
the user's torch, and either ``mmcv-lite`` or full ``mmcv`` works.  The pinned, known-good stack
used by ``make`` lives in ``requirements/stack.txt``.
"""
import os.path as osp

from setuptools import find_packages, setup

here = osp.dirname(osp.abspath(__file__))
version = {}
with open(osp.join(here, 'gpua_mmseg', 'version.py')) as f:
    exec(f.read(), version)

setup(
    name='gpua_mmseg',
    version=version['__version__'],
    description='Training-free open-vocabulary semantic segmentation (GPUA, SOTAlign, SCLIP, '
                'SC-CLIP) as an MMSegmentation 1.x plugin',
    packages=find_packages(include=['gpua_mmseg', 'gpua_mmseg.*']),
    include_package_data=True,
    package_data={'gpua_mmseg': ['datasets/class_names/*.txt', 'data/*', 'data/toyworld/*',
                              'toyworld/*.txt']},
    python_requires='>=3.9',
    install_requires=['numpy', 'safetensors'],
    extras_require={
        'mmseg': ['mmengine>=0.10', 'mmsegmentation>=1.2', 'open_clip_torch>=2.24', 'timm>=1.0'],
        'vis': ['matplotlib', 'scikit-image'],
        'dev': ['pytest', 'pytest-timeout'],
    },
)
