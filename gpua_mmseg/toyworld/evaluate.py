"""The toy world's results table, measured through the public CLIs (tools/fit_alignment.py and
tools/test.py, called in-process so tests can inject faults with monkeypatch).

Every number is a mIoU in percent on the ``val`` split of a dataset written by
:func:`gpua_mmseg.toyworld.dataset.write_dataset`; GPUA maps are fitted on its ``fit`` split
(labels never read), SOTAlign on the first ``labeled`` images of the ``fit`` split.
"""
import contextlib
import importlib.util
import io
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

__all__ = ['REPO_ROOT', 'config_path', 'run_test', 'run_fit', 'chance_miou', 'results_table',
           'format_table']

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_METRICS = re.compile(r'^metrics: .*?mIoU=([0-9.]+)', re.M)


def config_path(name: str) -> str:
    """``'sclip'`` -> ``<repo>/configs/toyworld/sclip_toyworld.py`` (must exist)."""
    path = osp.join(REPO_ROOT, 'configs', 'toyworld', f'{name}_toyworld.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'toy-world config {path} not found (needs a repository checkout)')
    return path


def _tool(name: str):
    path = osp.join(REPO_ROOT, 'tools', name)
    spec = importlib.util.spec_from_file_location('_toyworld_' + name[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _data_options(data_root: str, split: str) -> List[str]:
    return [f'test_dataloader.dataset.data_root={data_root}',
            f'test_dataloader.dataset.ann_file=ImageSets/Segmentation/{split}.txt']


def run_test(config: str, data_root: str, work_dir: str, options: Sequence[str] = (),
             split: str = 'val', extra_args: Sequence[str] = ()) -> float:
    """``tools/test.py CONFIG`` on ``split`` -> mIoU (%).  ``options``: extra KEY=VALUE strings;
    ``extra_args``: other test.py arguments (e.g. ``['--out', folder]``)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = _tool('test.py').main([config, '--work-dir', work_dir, *extra_args, '--cfg-options',
                                    *_data_options(data_root, split), *options])
    out = buf.getvalue()
    m = _METRICS.search(out)
    if rc != 0 or m is None:
        raise RuntimeError(f'tools/test.py {config} failed (exit {rc}):\n{out[-3000:]}')
    return float(m.group(1))


def run_fit(config: str, data_root: str, out: str, options: Sequence[str] = (),
            method: str = 'gpua', labeled: int = 0, split: str = 'fit',
            fit_options: Sequence[str] = ()) -> str:
    """``tools/fit_alignment.py CONFIG --out OUT`` on ``split`` -> the artifact path.
    ``fit_options``: ``--fit-options`` KEY=VALUE strings (e.g. ``refine_steps=50``)."""
    args = [config, '--out', out, '--no-plot', '--method', method,
            '--cfg-options', *_data_options(data_root, split), *options]
    if fit_options:
        args += ['--fit-options', *fit_options]
    if labeled:
        # The "test" split of the fit run is ``split`` (fit.txt), never the evaluated val split.
        args[1:1] = ['--labeled', str(labeled), '--labeled-split', 'test', '--allow-test-labels']
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = _tool('fit_alignment.py').main(args)
    if rc != 0 or not osp.isfile(out):
        raise RuntimeError(f'tools/fit_alignment.py {config} failed (exit {rc}):\n'
                           f'{buf.getvalue()[-3000:]}')
    return out


def _labels(data_root: str, split: str) -> List[np.ndarray]:
    with open(osp.join(data_root, 'ImageSets', 'Segmentation', f'{split}.txt')) as f:
        ids = [s.strip() for s in f if s.strip()]
    return [np.asarray(Image.open(osp.join(data_root, 'SegmentationClass', i + '.png')))
            for i in ids]


def chance_miou(data_root: str, split: str = 'val', num_classes: int = 8, seed: int = 0) -> float:
    """mIoU (%) of predictions drawn per pixel from the split's own class frequencies.

    IoU as MMSeg computes it (classes absent from both ground truth and prediction are skipped).
    """
    labs = _labels(data_root, split)
    freq = np.bincount(np.concatenate([x.reshape(-1) for x in labs]), minlength=num_classes)
    freq = freq[:num_classes] / freq[:num_classes].sum()
    rng = np.random.default_rng(seed)
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for gt in labs:
        pred = rng.choice(num_classes, size=gt.shape, p=freq)
        for c in range(num_classes):
            g, p = gt == c, pred == c
            inter[c] += np.logical_and(g, p).sum()
            union[c] += np.logical_or(g, p).sum()
    ok = union > 0
    return float(100.0 * np.mean(inter[ok] / union[ok]))


def results_table(data_root: str, work_dir: str, labeled: int = 10,
                  lambdas: Optional[Sequence[float]] = None) -> Dict[str, float]:
    """All rows of the toy-world table -> ``{row name: mIoU %}`` (minutes on one CPU core)."""
    os.makedirs(work_dir, exist_ok=True)
    rows = {'chance (class frequencies)': chance_miou(data_root)}
    for name in ('vanilla', 'maskclip', 'sclip', 'scclip'):
        rows[f'CLIP only: {name}'] = run_test(config_path(name), data_root,
                                              osp.join(work_dir, name))
    from mmengine.config import Config
    for base in ('sclip', 'scclip'):
        cfg_file = config_path('gpua_' + base)
        lam = Config.fromfile(cfg_file).model.decode_head.fusion_weight
        art = run_fit(cfg_file, data_root, osp.join(work_dir, f'gpua_{base}.safetensors'))
        for w in ([lam, 0.0] if lambdas is None else lambdas):
            rows[f'GPUA + {base}, lambda={w:g}'] = run_test(
                cfg_file, data_root, osp.join(work_dir, f'gpua_{base}_{w:g}'),
                [f'model.decode_head.alignment_path={art}', f'model.decode_head.fusion_weight={w}'])
        if labeled and base == 'sclip':
            sot = run_fit(cfg_file, data_root, osp.join(work_dir, f'sot_{base}.safetensors'),
                          method='sotalign', labeled=labeled)
            for w in (lam, 0.0):
                rows[f'SOTAlign ({labeled} labelled) + {base}, lambda={w:g}'] = run_test(
                    cfg_file, data_root, osp.join(work_dir, f'sot_{base}_{w:g}'),
                    [f'model.decode_head.alignment_path={sot}',
                     f'model.decode_head.fusion_weight={w}'])
    return rows


def format_table(rows: Dict[str, float]) -> str:
    """Markdown table of :func:`results_table` rows."""
    lines = ['| toy world (val, 8 classes) | mIoU % |', '|---|---|']
    lines += [f'| {k} | {v:.1f} |' for k, v in rows.items()]
    return '\n'.join(lines)
